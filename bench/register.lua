-- Registers a new user per request: usernames are PREFIX, the wrk thread
-- number and a per-thread counter, so no two requests collide (3-30 chars
-- of [A-Za-z0-9_.-]). PREFIX comes from the environment (default "r").
local threads = 0

function setup(thread)
    thread:set("tid", threads)
    threads = threads + 1
end

local prefix = os.getenv("PREFIX") or "r"
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function request()
    counter = counter + 1
    local name = string.format("%s%d_%d", prefix, tid, counter)
    local body = string.format(
        '{"username":"%s","email":"%s@example.com","password":"bench password horse 42"}',
        name, name)
    return wrk.format("POST", nil, headers, body)
end
