-- Adds the Bearer token from $TOKEN to every request.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
