-- wrk script: every request is the same pre-signed tampa body with a unique
-- X-Delivery-ID (the benchmark source reads its ID from that header, see
-- bench/lib.sh, so every delivery is new to the dedupe store). The plain
-- proxies get the same requests.
local threads = {}
local counter = 0
local prefix = "x"

function setup(thread)
  thread:set("tid", tostring(#threads + 1) .. "-" .. tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000)))
  table.insert(threads, thread)
end

function init(args)
  prefix = tid
  local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Webhook-Signature"] = os.getenv("BENCH_SIG")
  wrk.headers["X-Event-Type"] = "dev.tampa.event.created"
end

-- BENCH_UNIQUE_BODY=1 (a token source, bench/lib.sh): the body changes per
-- request too, so the body-digest claim sees a new body every time.
local unique = os.getenv("BENCH_UNIQUE_BODY") == "1"
-- BENCH_ORDER_KEYS=N (bench/order.sh): an X-Order-Key header taking N values
-- in turn, for a route with order_by = "header:X-Order-Key".
local order_keys = tonumber(os.getenv("BENCH_ORDER_KEYS") or "0")

function request()
  counter = counter + 1
  local id = prefix .. "-" .. counter
  wrk.headers["X-Delivery-ID"] = id
  if order_keys > 0 then
    wrk.headers["X-Order-Key"] = tostring(counter % order_keys)
  end
  if unique then
    return wrk.format(nil, nil, nil, (wrk.body:gsub('"id":"bench"', '"id":"' .. id .. '"', 1)))
  end
  return wrk.format(nil, nil, nil, nil)
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("BENCH requests=%d non2xx=%d errors=%d p50_us=%d p99_us=%d rps=%.1f\n",
    summary.requests, non2xx, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), summary.requests / (summary.duration / 1e6)))
end
