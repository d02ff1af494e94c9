-- wrk script for bench/bench_metasim.py: POST template sends to many recipients, each with its own
-- biz_opaque_callback_data, and print a JSON summary line the bench parses.
-- Requests are pre-built in init(): formatting one per request in Lua costs more than the
-- simulator's own work and would make wrk the bottleneck on a slow core.
local token = os.getenv("METASIM_TOKEN") or "EAAsim-bsp-system-user"
local pool_size = 20000
local pool = {}
local index = 0

local template = '{"messaging_product":"whatsapp","recipient_type":"individual","to":"+4477%08d",'
  .. '"type":"template","biz_opaque_callback_data":"bench-%d-%d","template":{"name":"summer_sale",'
  .. '"language":{"code":"en_US"},"components":[{"type":"body","parameters":['
  .. '{"type":"text","text":"Sam"},{"type":"text","text":"20%%"}]}]}}'

init = function(args)
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
  local seed = math.random(1, 1000000)
  for i = 1, pool_size do
    pool[i] = wrk.format("POST", nil, headers, string.format(template, i, seed, i))
  end
end

request = function()
  index = index % pool_size + 1
  return pool[index]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'METASIM_JSON {"requests":%d,"duration_us":%d,"errors_status":%d,"errors_connect":%d,'
      .. '"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
