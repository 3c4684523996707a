-- wrk script: counts responses per status code and keeps one body of a non-2xx answer.
-- Printed by done() as "status <code>: <count>" lines (used by zero-downtime.sh).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {}; errbody = "" end
function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if status >= 300 and errbody == "" then errbody = string.sub(body or "", 1, 120) end
end
function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
        local b = t:get("errbody")
        if b ~= "" then io.write("non-2xx body: " .. string.gsub(b, "\n", " ") .. "\n") end
    end
    for k, v in pairs(total) do io.write(string.format("status %d: %d\n", k, v)) end
end
