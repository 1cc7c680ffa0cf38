#!/usr/bin/env bash
# Load benchmark of the authorisation service's POST /get_token, run by hand (never in CI). Method and
# figures: docs/benchmark-auth.md.
#
# Builds the service and the bench tool (release, `bench` feature), starts on loopback:
#   - the TLS fake homeserver (`matrixrtc-auth-bench fake-homeserver`, one thread),
#   - the ceiling (`matrixrtc-auth-bench ceiling`: a bare axum endpoint that only parses and signs),
#   - the relay (`matrixrtc-auth-bench relay`: the floor under a cold request, one userinfo round trip per
#     request over pooled TLS and nothing else: no HTTP library, JSON or JWT),
#   - the service twice: "warm" with the OpenID cache on (default TTL) and "cold" with it off
#     (LIVEKIT_OPENID_CACHE_SECONDS=0), so that every cold request is a userinfo round trip over a
#     pooled TLS connection. The fake homeserver is not a full-access homeserver: no SFU call.
# then RUNS saturation runs (closed loop) of ceiling, warm, cold and relay, interleaved, and after them
# RUNS fixed-rate runs (open loop) of each. Warm runs draw from USERS users; cold and relay runs use a new
# token for every request.
# Each run prints the generator's RESULT line plus, from /proc, the CPU the server spent per request
# (`svc_cpu_us_per_req`; for cold and relay runs also the fake homeserver's, `hs_cpu_us_per_req`) and the
# server's peak resident memory sampled every 100 ms (`rss_max_kib`). The end is a table of medians.
#
# Knobs (environment): RUNS (3), DURATION (seconds, 10), SAT_CONNECTIONS (32), RATE (1000),
# RATE_CONNECTIONS (1000), USERS (1000), ROOMS (50), LOAD_THREADS (generator threads, 1),
# OUT_DIR (raw output; default a new /tmp/bench-get-token.* folder), SKIP_BUILD (1: use the binaries
# already in target/<triple>/release), CARGO_TARGET_DIR (honoured), CAPTURE (1: record the loopback
# packets of each cold fixed-rate run with tcpdump, which needs root or CAP_NET_RAW, and split its tail
# with scripts/bench-tail-split.py into the service's and the homeserver's share).
#
# Every run is bounded by its duration plus a timeout; every process started here is stopped on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
SAT_CONNECTIONS=${SAT_CONNECTIONS:-32}
RATE=${RATE:-1000}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-1000}
USERS=${USERS:-1000}
ROOMS=${ROOMS:-50}
LOAD_THREADS=${LOAD_THREADS:-1}
out=${OUT_DIR:-$(mktemp -d /tmp/bench-get-token.XXXXXX)}
mkdir -p "$out"
# Built as the images' binaries are: static, for this machine's target (scripts/release-cross-setup.sh).
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=${CARGO_TARGET_DIR:-$root/target}/$triple/release
bench=$bin/matrixrtc-auth-bench
run_timeout=$((DURATION + 60))
# Servers exit on their own after this long, should this script be killed without its cleanup.
lifetime=$((RUNS * 12 * (DURATION + 5) + 300))

die() {
  echo "error: $*" >&2
  exit 1
}

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$triple" -p matrixrtc-auth \
    --features bench --bin matrixrtc-auth --bin matrixrtc-auth-bench
fi
[[ -x $bench && -x $bin/matrixrtc-auth ]] || die "binaries not found in $bin"

# 1,000 connections need as many descriptors in the generator and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) > RATE_CONNECTIONS + 100)) || die "open-file limit $(ulimit -n) too low for $RATE_CONNECTIONS connections"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_line FILE PREFIX PID: the rest of FILE's first line starting with PREFIX, within 10 s.
wait_for_line() {
  local file=$1 prefix=$2 pid=$3 value=
  for _ in $(seq 100); do
    value=$(sed -n "s/^$prefix//p" "$file" | head -n 1)
    [[ -n $value ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $value ]] || die "no '$prefix' line from process $pid; see ${file%.out}.err"
  echo "$value"
}

# ── servers ─────────────────────────────────────────────────────────────────
"$bench" fake-homeserver --lifetime "$lifetime" >"$out/fake-hs.out" 2>"$out/fake-hs.err" &
hs_pid=$!
pids+=("$hs_pid")
hs=$(wait_for_line "$out/fake-hs.out" server_name= "$hs_pid")

"$bench" ceiling --lifetime "$lifetime" >"$out/ceiling.out" 2>"$out/ceiling.err" &
ceiling_pid=$!
pids+=("$ceiling_pid")
ceiling_addr=$(wait_for_line "$out/ceiling.out" listening= "$ceiling_pid")

"$bench" relay --lifetime "$lifetime" >"$out/relay.out" 2>"$out/relay.err" &
relay_pid=$!
pids+=("$relay_pid")
relay_addr=$(wait_for_line "$out/relay.out" listening= "$relay_pid")

# start_service NAME [VAR=value...]: starts the service with the benchmark environment; sets svc_pid
# and svc_addr.
start_service() {
  local name=$1 port
  shift
  port=$(free_port)
  env LIVEKIT_URL=ws://127.0.0.1:"$(free_port)" \
    LIVEKIT_KEY=benchkey \
    LIVEKIT_SECRET=bench-secret-bench-secret-bench-secret \
    LIVEKIT_FULL_ACCESS_HOMESERVERS=some.other.example \
    LIVEKIT_OUTBOUND_IP_ALLOWLIST=127.0.0.0/8 \
    LIVEKIT_INSECURE_SKIP_VERIFY_TLS=YES_I_KNOW_WHAT_I_AM_DOING \
    LIVEKIT_LOG_LEVEL=warn \
    LIVEKIT_JWT_BIND=127.0.0.1:"$port" \
    "$@" \
    "$bin/matrixrtc-auth" >"$out/$name.log" 2>&1 &
  svc_pid=$!
  pids+=("$svc_pid")
  svc_addr=127.0.0.1:$port
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://$svc_addr/healthz" && return 0
    kill -0 "$svc_pid" 2>/dev/null || die "service $name exited; see $out/$name.log"
    sleep 0.1
  done
  die "service $name not healthy after 10 s; see $out/$name.log"
}
start_service warm
warm_pid=$svc_pid warm_addr=$svc_addr
start_service cold LIVEKIT_OPENID_CACHE_SECONDS=0
cold_pid=$svc_pid cold_addr=$svc_addr

targets=(ceiling warm cold relay)
declare -A server_pid=([ceiling]=$ceiling_pid [warm]=$warm_pid [cold]=$cold_pid [relay]=$relay_pid)
declare -A server_addr=([ceiling]=$ceiling_addr [warm]=$warm_addr [cold]=$cold_addr [relay]=$relay_addr)
declare -A tokens=([ceiling]=warm [warm]=warm [cold]=cold [relay]=cold)

# ── checks: every target answers 200, and the service and the relay really ask the homeserver ─
for target in "${targets[@]}"; do
  line=$(timeout 30 "$bench" load --url "http://${server_addr[$target]}" --server-name "$hs" \
    --connections 1 --duration 0.5 --tokens "${tokens[$target]}" --label "check-$target")
  [[ $line == *" non2xx=0 errors=0 "* && $line != *" requests=0 "* ]] || die "check of $target failed: $line"
done
bad_body='{"room_id":"!r:'$hs'","slot_id":"m.call#ROOM","openid_token":{"access_token":"not-a-tok","token_type":"Bearer","matrix_server_name":"'$hs'","expires_in":3600},"member":{"id":"m","claimed_user_id":"@utok1:'$hs'","claimed_device_id":"D"}}'
for target in warm cold relay; do
  status=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "$bad_body" "http://${server_addr[$target]}/get_token")
  [[ $status == 401 ]] || die "$target: a token the homeserver refuses got HTTP $status, not 401"
done

# ── measurement helpers ─────────────────────────────────────────────────────
clk_tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
per_request() { awk -v a="$1" -v b="$2" -v n="$3" -v t="$clk_tck" 'BEGIN { printf "%.1f", n ? (b - a) * 1e6 / t / n : 0 }'; }
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p"; }
sample_rss() { # sample_rss PID FILE: VmRSS every 100 ms until killed
  while kill -0 "$1" 2>/dev/null; do
    rss_kib "$1" >>"$2"
    sleep 0.1
  done
}

# measure KIND TARGET RUN ARGS...: one bounded load run with the server's CPU and RSS around it.
measure() {
  local kind=$1 target=$2 run=$3 pid=${server_pid[$2]} sampler line n svc_before svc_after hs_before hs_after extra=
  shift 3
  local rss_file=$out/rss-$kind-$target-$run.txt
  : >"$rss_file"
  sample_rss "$pid" "$rss_file" &
  sampler=$!
  svc_before=$(cpu_ticks "$pid")
  hs_before=$(cpu_ticks "$hs_pid")
  line=$(timeout "$run_timeout" "$bench" load --url "http://${server_addr[$target]}" --server-name "$hs" \
    --duration "$DURATION" --tokens "${tokens[$target]}" --users "$USERS" --rooms "$ROOMS" \
    --threads "$LOAD_THREADS" --label "$kind-$target" "$@" 2>"$out/load-$kind-$target-$run.err") ||
    die "load run $kind $target failed; see $out/load-$kind-$target-$run.err"
  svc_after=$(cpu_ticks "$pid")
  hs_after=$(cpu_ticks "$hs_pid")
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  n=$(field requests <<<"$line")
  if [[ ${tokens[$target]} == cold ]]; then
    extra=" hs_cpu_us_per_req=$(per_request "$hs_before" "$hs_after" "$n")"
  fi
  echo "$line svc_cpu_us_per_req=$(per_request "$svc_before" "$svc_after" "$n")$extra" \
    "rss_max_kib=$(sort -n "$rss_file" | tail -n 1)" | tee -a "$out/$kind-$target.results"
}

echo "fake homeserver $hs; ceiling $ceiling_addr; relay $relay_addr;" \
  "service warm $warm_addr (pid $warm_pid), cold $cold_addr (pid $cold_pid)"
echo "raw output: $out; $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for target in "${targets[@]}"; do
  echo "idle RSS $target: $(rss_kib "${server_pid[$target]}") KiB"
done

# Warm-up (not reported): connection pools, allocator, the warm service's OpenID cache.
for target in "${targets[@]}"; do
  timeout 30 "$bench" load --url "http://${server_addr[$target]}" --server-name "$hs" --duration 3 \
    --tokens "${tokens[$target]}" --users "$USERS" --rooms "$ROOMS" --label "warmup-$target" >/dev/null
done

# Saturation runs first: memory that a server keeps after the 1,000-connection runs (the allocator does
# not hand it back) would otherwise show up as the peak of the saturation runs.
for run in $(seq "$RUNS"); do
  for target in "${targets[@]}"; do
    measure saturation "$target" "$run" --connections "$SAT_CONNECTIONS" --rate 0
  done
done
# capture_start RUN / capture_stop RUN: with CAPTURE=1, the packets between the cold service and its
# clients and homeserver during one run, then the split of its tail (only packets with data count).
capture_start() {
  [[ ${CAPTURE:-0} == 1 ]] || return 0
  tcpdump -i lo -n -B 32768 -w "$out/capture-$1.pcap" \
    "tcp and (port ${cold_addr##*:} or port ${hs##*:})" 2>"$out/capture-$1.err" &
  capture_pid=$!
  pids+=("$capture_pid")
  sleep 1 # tcpdump's filter is in place before the first request
}
capture_stop() {
  [[ ${CAPTURE:-0} == 1 ]] || return 0
  sleep 0.5
  kill "$capture_pid" && wait "$capture_pid" 2>/dev/null || true
  tcpdump -r "$out/capture-$1.pcap" -n -tt -q 2>/dev/null |
    python3 "$root/scripts/bench-tail-split.py" --service-port "${cold_addr##*:}" --homeserver-port "${hs##*:}" |
    sed "s/^/tail split, cold run $1: /" | tee -a "$out/tail-split.results"
}
if [[ ${CAPTURE:-0} == 1 ]]; then
  command -v tcpdump >/dev/null || die "CAPTURE=1 needs tcpdump"
fi

for run in $(seq "$RUNS"); do
  for target in "${targets[@]}"; do
    if [[ $target == cold ]]; then capture_start "$run"; fi
    measure rate "$target" "$run" --connections "$RATE_CONNECTIONS" --rate "$RATE"
    if [[ $target == cold ]]; then capture_stop "$run"; fi
  done
done

# ── summary ─────────────────────────────────────────────────────────────────
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
summarise() { # summarise KIND TARGET FIELDS...
  local file=$out/$1-$2.results parts=()
  shift 2
  [[ -s $file ]] || return 0
  for f in "$@"; do
    parts+=("$f=$(field "$f" <"$file" | median)")
  done
  printf '%-22s %s\n' "${file##*/}" "${parts[*]}"
}
echo "── medians of $RUNS runs (saturation: $SAT_CONNECTIONS connections; rate: $RATE/s over $RATE_CONNECTIONS connections) ──"
for target in "${targets[@]}"; do
  summarise saturation "$target" rps p50_ms p99_ms svc_cpu_us_per_req hs_cpu_us_per_req load_cpu_us_per_req \
    rss_max_kib non2xx errors
done
for target in "${targets[@]}"; do
  summarise rate "$target" rps p50_ms p99_ms p999_ms max_ms lag_p99_ms svc_cpu_us_per_req rss_max_kib non2xx errors
done
for target in "${targets[@]}"; do
  echo "RSS $target: now $(rss_kib "${server_pid[$target]}") KiB, peak since start (VmHWM) $(hwm_kib "${server_pid[$target]}") KiB"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if cat "$out"/*.results | grep -Eq ' (non2xx|errors)=[1-9]'; then
  echo "WARNING: some requests failed; see the RESULT lines above and $out" >&2
fi
