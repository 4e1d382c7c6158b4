-- wrk script: every request carries the next never-used bearer token from $TOKENS_FILE,
-- starting at the offset stored in $TOKENS_FILE.offset (so warm-up and reps never reuse one).
-- Run with -t1. done() records the new offset and says how many requests had to reuse a token.
local file = os.getenv("TOKENS_FILE")
local offset_file = file .. ".offset"

local function read_offset()
  local f = io.open(offset_file, "r")
  if not f then return 0 end
  local n = tonumber(f:read("*l")) or 0
  f:close()
  return n
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function init(args)
  tokens = {}
  for line in io.lines(file) do tokens[#tokens + 1] = "Bearer " .. line end
  ntokens = #tokens
  start = read_offset()
  sent = 0
end

function request()
  local i = start + sent
  sent = sent + 1
  wrk.headers["Authorization"] = tokens[(i % #tokens) + 1]
  return wrk.format(nil, nil)
end

function done(summary, latency, requests)
  local used, total = 0, 0
  for _, t in ipairs(threads) do
    used = used + t:get("sent")
    total = t:get("start") + t:get("sent")
    local count = t:get("ntokens")
    if total > count then
      io.write(string.format("TOKENS REUSED: %d requests carried an already-used token (only %d tokens)\n", total - count, count))
    end
  end
  local f = io.open(offset_file, "w")
  f:write(tostring(total) .. "\n")
  f:close()
  io.write(string.format("fresh-token requests sent: %d\n", used))
end
