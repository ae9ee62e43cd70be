-- One replica's sync with the fleet (echelon-infrastructure, state/redis.rs), atomic in Redis.
--
-- Time is Redis's own (TIME), so every replica reads the same clock; deadlines come in and go
-- out as milliseconds from now.
--
-- ARGV: replica, budget count NB, instance count NI, trial lease ms, dead mark ms, then per
-- budget (limit per minute, debt, want) and per instance (cooldown ms or 0, dead op 0 none /
-- 1 dead / 2 revived, breaker op 0 none / 1 opened / 2 closed, breaker open ms, probe op 0 none /
-- 1 healthy / 2 failed).
-- KEYS: NB budget hashes {t = tokens, at = ms}, then per instance its cooldown deadline, dead
-- mark, breaker open deadline, trial owner and last probe (a hash {seq, ok}).
--
-- Returns the granted units of every budget, then per instance: cooldown ms left, dead (0/1),
-- breaker (0 closed, 1 hold, 2 this replica's trial), hold ms left, probe seq (0: none), probe
-- ok (0/1), whether this call reported that probe (0/1).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local replica = ARGV[1]
local nb = tonumber(ARGV[2])
local ni = tonumber(ARGV[3])
local trial_ttl = tonumber(ARGV[4])
local dead_ttl = tonumber(ARGV[5])
local a = 6
local out = {}

for i = 1, nb do
  local key = KEYS[i]
  local limit = tonumber(ARGV[a])
  local debt = tonumber(ARGV[a + 1])
  local want = tonumber(ARGV[a + 2])
  a = a + 3
  local state = redis.call('HMGET', key, 't', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then
    tokens = limit
    at = now
  end
  if now > at then
    tokens = math.min(limit, tokens + (now - at) * limit / 60000)
    at = now
  end
  -- A debt is paid whatever the bucket holds; new units only as far as it holds them.
  tokens = tokens - debt
  local granted = debt
  if want < 0 then
    tokens = math.min(limit, tokens - want)
    granted = granted + want
  elseif want > 0 and tokens >= 1 then
    local take = math.min(want, math.floor(tokens))
    tokens = tokens - take
    granted = granted + take
  end
  redis.call('HSET', key, 't', tostring(tokens), 'at', tostring(at))
  redis.call('PEXPIRE', key, 120000)
  out[#out + 1] = granted
end

for j = 1, ni do
  local k = nb + (j - 1) * 5
  local kcool, kdead, kopen, ktrial = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local kprobe = KEYS[k + 5]
  local cool = tonumber(ARGV[a])
  local dead = tonumber(ARGV[a + 1])
  local bop = tonumber(ARGV[a + 2])
  local bms = tonumber(ARGV[a + 3])
  local pop = tonumber(ARGV[a + 4])
  a = a + 5

  -- Cooldown deadlines only move later.
  local until_cool = tonumber(redis.call('GET', kcool) or '0')
  if cool > 0 and now + cool > until_cool then
    until_cool = now + cool
    redis.call('SET', kcool, until_cool, 'PX', cool + 1000)
  end
  local cool_left = 0
  if until_cool > now then
    cool_left = until_cool - now
  end

  if dead == 1 then
    redis.call('SET', kdead, '1', 'PX', dead_ttl)
  elseif dead == 2 then
    redis.call('DEL', kdead)
  end
  local is_dead = redis.call('EXISTS', kdead)

  -- The breaker: an open deadline only moves later; once it is over, the first replica to ask
  -- holds the fleet's one trial for the trial lease, and the others keep refusing.
  if bop == 1 then
    local until_open = now + bms
    local open = tonumber(redis.call('GET', kopen) or '0')
    if until_open > open then
      redis.call('SET', kopen, until_open, 'PX', bms + 600000)
    end
    if redis.call('GET', ktrial) == replica then
      redis.call('DEL', ktrial)
    end
  elseif bop == 2 then
    redis.call('DEL', kopen, ktrial)
  end
  local breaker, hold = 0, 0
  local open = redis.call('GET', kopen)
  if open then
    open = tonumber(open)
    if open > now then
      breaker, hold = 1, open - now
    else
      local owner = redis.call('GET', ktrial)
      if not owner then
        redis.call('SET', ktrial, replica, 'PX', trial_ttl)
        owner = replica
      end
      if owner == replica then
        breaker = 2
      else
        breaker, hold = 1, math.max(redis.call('PTTL', ktrial), 1)
      end
    end
  end

  -- The latest probe verdict, whoever ran it.
  local mine = 0
  if pop > 0 then
    redis.call('HINCRBY', kprobe, 'seq', 1)
    redis.call('HSET', kprobe, 'ok', pop == 1 and 1 or 0)
    redis.call('PEXPIRE', kprobe, dead_ttl)
    mine = 1
  end
  local probe = redis.call('HMGET', kprobe, 'seq', 'ok')

  out[#out + 1] = cool_left
  out[#out + 1] = is_dead
  out[#out + 1] = breaker
  out[#out + 1] = hold
  out[#out + 1] = tonumber(probe[1] or '0')
  out[#out + 1] = tonumber(probe[2] or '0')
  out[#out + 1] = mine
end

return out
