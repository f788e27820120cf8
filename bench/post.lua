-- wrk script: POST the 4 KiB chat-completion body.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
local f = assert(io.open(os.getenv("BODY_FILE") or "bench/body-4k.json", "r"))
wrk.body = f:read("*a")
f:close()
