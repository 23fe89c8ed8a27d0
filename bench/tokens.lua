-- GETs the URL with a Bearer token taken in turn from the file $TOKENS (one
-- access token per line); the wrk threads start at different offsets, so
-- with many tokens the verifiers' caches see distinct tokens.
local threads = 0

function setup(thread)
    thread:set("tid", threads)
    threads = threads + 1
end

local tokens, n, i = {}, 0, 0

function init(args)
    for line in io.lines(os.getenv("TOKENS")) do
        if #line > 0 then
            n = n + 1
            tokens[n] = line
        end
    end
    i = (tid * 7919) % n
end

function request()
    i = i % n + 1
    return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. tokens[i] }, nil)
end
