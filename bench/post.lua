-- wrk script for the POST scenario: every request carries the same 64 KiB body.
wrk.method = "POST"
wrk.body = string.rep("p", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
