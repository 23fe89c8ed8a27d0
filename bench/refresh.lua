-- Rotates refresh tokens: each wrk thread takes its share of the tokens in
-- the file $TOKENS (one per line) as a pool; a request takes one token from
-- the pool and its answer's new refresh token goes back, so every token in
-- flight is the live tip of its own family (a rotated one would revoke the
-- family). The pool must hold more tokens than a thread has connections.
local threads = 0

function setup(thread)
    thread:set("tid", threads)
    threads = threads + 1
end

local pool, head, tail = {}, 1, 0
local headers = { ["Content-Type"] = "application/json" }
-- Sent when failures emptied the pool: malformed, so auth refuses it (401)
-- before any database query and no family is touched.
local spare = "pool-exhausted"

function init(args)
    local n = tonumber(os.getenv("THREADS") or "2")
    local i = 0
    for line in io.lines(os.getenv("TOKENS")) do
        if i % n == tid and #line > 0 then
            tail = tail + 1
            pool[tail] = line
        end
        i = i + 1
    end
end

function request()
    local tok
    if head <= tail then
        tok = pool[head]
        pool[head] = nil
        head = head + 1
    else
        tok = spare
    end
    return wrk.format("POST", nil, headers, '{"refresh":"' .. tok .. '"}')
end

function response(status, hdrs, body)
    local tok = string.match(body, '"refresh":%s*"([^"]+)"')
    if status == 200 and tok then
        tail = tail + 1
        pool[tail] = tok
    end
end
