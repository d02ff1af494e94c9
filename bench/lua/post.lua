-- Generic wrk script for bench/: POST bodies from a file (one per line, cycled) with fixed headers
-- from another file ("Name: value" per line), and print a JSON summary line the bench parses.
-- Requests are pre-built in init(): formatting them per request in Lua would make wrk the
-- bottleneck on a slow core.
--   BENCH_BODIES   path of the bodies file (required)
--   BENCH_HEADERS  path of the headers file (optional)
local pool = {}
local count = 0
local index = 0

init = function(args)
  local headers = {["Content-Type"] = "application/json"}
  local header_path = os.getenv("BENCH_HEADERS")
  if header_path and header_path ~= "" then
    for line in io.lines(header_path) do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      if name then headers[name] = value end
    end
  end
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    if line ~= "" then
      count = count + 1
      pool[count] = wrk.format("POST", nil, headers, line)
    end
  end
  -- Threads start at different places in the pool.
  index = math.random(0, count - 1)
end

request = function()
  index = index % count + 1
  return pool[index]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors_status":%d,"errors_connect":%d,'
      .. '"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
