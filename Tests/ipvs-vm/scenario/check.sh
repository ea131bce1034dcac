#!/bin/sh
# The IPVS scenario, run by /init inside the test VM (busybox sh). Usage: check.sh manual|kuberules
#   manual     programs the state kube-proxy would program for cluster.yaml with ipvsadm, ip, ipset
#              and iptables: the baseline that proves the kernel side (and the expected files).
#   kuberules  lets `kuberules apply/diff/cleanup --backend ipvs` do it instead.
# Both modes then run the same checks: IPVS state against expected-N.ipvs, ClusterIPs on
# kube-ipvs0, real TCP/UDP connections from a client pod, an endpoint change, cleanup.
# kuberules mode adds the data-path flows of Tests/IptablesBackendTests/datapath (an off-cluster
# client with two sources: masquerade, externalTrafficPolicy=Local, externalIP, LoadBalancer IP,
# loadBalancerSourceRanges; hairpin; cleanup of ipsets and iptables); manual mode SKIPs those
# that need kube-proxy's iptables rules for the external client.
# Prints "IPVS-TEST: PASS name" / "IPVS-TEST: FAIL name: reason" / "IPVS-TEST: SKIP name: why".
MODE=${1:-manual}
S=/scenario
NODE=node
NODE_IP=192.168.50.1
T=/tmp/ipvs-check
mkdir -p $T

# Debian's busybox runs its own applets before $PATH: `ip` must be iproute2 (netns, veth).
ip() { /sbin/ip "$@"; }

up() { cut -d' ' -f1 /proc/uptime; }
pass() { echo "IPVS-TEST: PASS $1 [$(up)s]"; }
fail() { echo "IPVS-TEST: FAIL $1: $2 [$(up)s]"; }
skip() { echo "IPVS-TEST: SKIP $1: $2"; }
indent() { sed 's/^/    | /'; }
# run NAME CMD...: PASS when CMD exits 0; else FAIL with its last output lines.
run() {
  name=$1; shift
  if "$@" > $T/out 2>&1; then pass "$name"; else
    rc=$?; fail "$name" "exit $rc: $(tail -n 3 $T/out | tr '\n' ' ')"; indent < $T/out | tail -n 20; fi
}

# ---- the node: pods in network namespaces behind veths, a client pod, an external client ------
# p1..p3 = pods 10.244.0.2..4 on this node, p4 = pod 10.244.1.2 standing for a pod on another
# node ("node-b", routed through this one), answering "pod-a|b|c|d <peer address>" on TCP 8080
# and UDP 5353; c1 = client pod 10.244.0.10. The node (this namespace) routes to each pod through
# its veth (gateway 10.244.0.1, 10.244.1.1 for p4, proxy ARP). ext = an off-cluster client with
# two sources, 192.168.50.100 and .101, on a veth to the node's address 192.168.50.1/24 (vext),
# default route via the node (service, external and LoadBalancer IPs).
setup_node() {
  ip link set lo up
  sysctl -qw net.ipv4.ip_forward=1
  # REJECT/port-unreachable answers are rate-limited per peer: refuse every probe at once
  sysctl -qw net.ipv4.icmp_ratelimit=0
  ip netns add ext || return 1
  ip link add vext type veth peer name eth0 netns ext || return 1
  ip link set vext up && ip addr add $NODE_IP/24 dev vext || return 1
  ip -n ext link set lo up; ip -n ext link set eth0 up
  ip -n ext addr add 192.168.50.100/24 dev eth0 && ip -n ext addr add 192.168.50.101/24 dev eth0 &&
    ip -n ext route add default via $NODE_IP || return 1
  i=0
  for ns in p1 p2 p3 c1 p4; do
    i=$((i + 1))
    gw=10.244.0.1
    case $ns in c1) addr=10.244.0.10 ;; p4) addr=10.244.1.2 gw=10.244.1.1 ;; *) addr=10.244.0.$((i + 1)) ;; esac
    ip netns add $ns || return 1
    ip link add v$ns type veth peer name eth0 netns $ns || return 1
    ip -n $ns link set lo up; ip -n $ns link set eth0 up
    ip -n $ns addr add $addr/24 dev eth0
    ip -n $ns route add default via $gw dev eth0 onlink
    ip link set v$ns up
    ip addr add $gw/32 dev v$ns
    ip route add $addr/32 dev v$ns
    sysctl -qw net.ipv4.conf.v$ns.proxy_arp=1
  done
  for ns in p1 p2 p3 p4; do
    case $ns in p1) n=pod-a ;; p2) n=pod-b ;; p3) n=pod-c ;; p4) n=pod-d ;; esac
    ip netns exec $ns socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:"echo $n \$SOCAT_PEERADDR" 2>/dev/null &
    ip netns exec $ns socat UDP-RECVFROM:5353,fork SYSTEM:"echo $n \$SOCAT_PEERADDR" 2>/dev/null &
  done
  # wait until the servers listen (software emulation is slow)
  for k in 1 2 3 4 5 6 7 8 9 10; do
    [ "$(ip netns exec p4 netstat -ltn 2>/dev/null | grep -c ':8080 ')" = 1 ] && return 0
    sleep 0.5
  done
  echo "pod servers did not start"; return 1
}

# tcp NS IP PORT [SRC] / udp NS IP PORT: the first line the server answers ("pod-a 10.244.0.10"),
# or "none" (why in $T/why: refused, timeout, ...). NS "-" is the node itself; SRC binds the
# client's source address (the external client has two).
inns() { if [ "$1" = - ]; then shift; "$@"; else ns=$1; shift; ip netns exec "$ns" "$@"; fi; }
tcp() {
  r=$(inns $1 timeout 6 socat -T 3 -t 3 - TCP:$2:$3,connect-timeout=2${4:+,bind=$4} </dev/null 2>$T/tcperr | head -n 1)
  case $(cat $T/tcperr) in *refused*) echo refused ;; *"timed out"*) echo timeout ;; *unreachable*) echo unreachable ;; *) tail -n 1 $T/tcperr ;; esac > $T/why
  echo "${r:-none}"
}
# UDP has no end of stream: socat waits -t seconds for the answer; a second, patient try when
# the first one heard nothing.
udp() {
  r=$(echo q | inns $1 timeout 4 socat -T 1 -t 0.5 - UDP:$2:$3 2>/dev/null | head -n 1)
  [ -n "$r" ] || r=$(echo q | inns $1 timeout 6 socat -T 4 -t 4 - UDP:$2:$3 2>/dev/null | head -n 1)
  echo "${r:-none}"
}

# connect NAME COUNT "ALLOWED" "REQUIRED PODS" tcp|udp NS IP PORT [SRC]: COUNT connections, each
# answered by an allowed pod, every required pod seen (round robin). An ALLOWED word is a pod
# ("pod-a": any peer address) or pod@peer ("pod-a@10.244.0.1": that pod saw that source, i.e.
# masqueraded to the node, or the client's own address kept).
connect() {
  name=$1 count=$2 allowed=$3 required=$4 proto=$5; shift 5
  seen="" bad=""
  k=0
  while [ $k -lt $count ]; do
    k=$((k + 1))
    a=$($proto "$@"); pod=${a%% *}; peer=${a#* }
    seen="$seen $pod"
    case " $allowed " in *" $pod "*|*" $pod@$peer "*) ;; *) bad="$bad [$a]" ;; esac
  done
  missing=""
  for p in $required; do case "$seen " in *" $p "*) ;; *) missing="$missing $p" ;; esac; done
  if [ -z "$bad" ] && [ -z "$missing" ]; then pass "$name"
  else fail "$name" "$proto $* answered by:$seen;${bad:+ unexpected:$bad;}${missing:+ never reached:$missing}"; fi
}

sticks() { # NAME COUNT NS IP PORT: ClientIP affinity, every connection answered by the same pod
  name=$1 count=$2; shift 2
  seen="" first="" k=0 moved=""
  while [ $k -lt $count ]; do
    k=$((k + 1))
    a=$(tcp "$@"); pod=${a%% *}
    seen="$seen $pod"; first=${first:-$pod}
    [ "$pod" = "$first" ] || moved=1
  done
  case "$first" in pod-*) ;; *) moved=1 ;; esac
  if [ -z "$moved" ]; then pass "$name ($first)"; else fail "$name" "tcp $* answered by:$seen"; fi
}

refused() { # NAME NS IP PORT [SRC]: nothing answers (the PASS line says how: refused or timeout)
  a=$(tcp $2 $3 $4 ${5:-})
  if [ "$a" = none ]; then pass "$1 ($(cat $T/why))"; else fail "$1" "$3:$4${5:+ from $5} answered '$a'"; fi
}

# IPVS state without the connection counters; services, and real servers within each, in
# text order (ipvsadm --sort orders addresses by their byte-swapped value):
#   TCP 10.96.0.10:80 rr
#     -> 10.244.0.2:8080 Masq 1
ipvs_state() {
  ipvsadm -Ln --sort > $T/ipvsadm || return 1
  awk 'NR > 3 { if ($1 == "->") print svc "\t  -> " $2 " " $3 " " $4; else { $1 = $1; svc = $0; print svc "\t" } }' $T/ipvsadm |
    LC_ALL=C sort | awk -F '\t' '{ print ($2 == "" ? $1 : $2) }'
}
# check_state NAME EXPECTED [draining-ok]: with draining-ok, real servers at weight 0 (a removed
# TCP endpoint with connections, kept until they drain) may remain.
check_state() {
  ipvs_state > $T/state
  if cmp -s $T/state $S/$2; then pass "$1"; return; fi
  if [ -n "${3:-}" ] && grep -v ' 0$' $T/state | cmp -s - $S/$2; then
    pass "$1"; echo "    (real servers draining at weight 0: $(grep ' 0$' $T/state | tr -s ' ' | tr '\n' ' '))"; return
  fi
  fail "$1" "ipvsadm -Ln --sort differs from $2 (diff below)"
  diff -u $S/$2 $T/state | indent
}

check_addresses() { # NAME IP...: every IP is a /32 on kube-ipvs0
  name=$1; shift
  have=$(ip -4 -o addr show dev kube-ipvs0 2>/dev/null | awk '{ print $4 }' | tr '\n' ' ')
  missing=""
  for a in "$@"; do case " $have" in *" $a/32 "*) ;; *) missing="$missing $a/32" ;; esac; done
  if [ -z "$missing" ]; then pass "$name"; else fail "$name" "kube-ipvs0 lacks$missing (has: $have)"; fi
}

# ---- manual mode: what kube-proxy would program ---------------------------------------------
manual_apply_1() {
  ip link add kube-ipvs0 type dummy || return 1     # kube-proxy leaves it down
  for a in 10.96.0.10 10.96.0.11 10.96.0.12 10.96.0.13 198.51.100.10 198.51.100.20; do
    ip addr add $a/32 dev kube-ipvs0 || return 1
  done
  ipvsadm -A -t 10.96.0.10:80 -s rr &&
  ipvsadm -a -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 1 &&
  ipvsadm -a -t 10.96.0.10:80 -r 10.244.0.3:8080 -m -w 1 &&
  ipvsadm -A -u 10.96.0.10:53 -s rr &&
  ipvsadm -a -u 10.96.0.10:53 -r 10.244.0.2:5353 -m -w 1 &&
  ipvsadm -a -u 10.96.0.10:53 -r 10.244.0.3:5353 -m -w 1 &&
  ipvsadm -A -t 10.96.0.11:80 -s rr &&
  ipvsadm -A -t 10.96.0.12:80 -s rr -p 10800 &&
  ipvsadm -a -t 10.96.0.12:80 -r 10.244.0.2:8080 -m -w 1 &&
  ipvsadm -a -t 10.96.0.12:80 -r 10.244.0.3:8080 -m -w 1 &&
  ipvsadm -A -t $NODE_IP:30080 -s rr &&
  ipvsadm -a -t $NODE_IP:30080 -r 10.244.0.2:8080 -m -w 1 &&
  ipvsadm -a -t $NODE_IP:30080 -r 10.244.0.3:8080 -m -w 1 &&
  ipvsadm -A -t 198.51.100.10:80 -s rr &&
  ipvsadm -a -t 198.51.100.10:80 -r 10.244.0.2:8080 -m -w 1 &&
  ipvsadm -a -t 198.51.100.10:80 -r 10.244.0.3:8080 -m -w 1 &&
  ipvsadm -A -u 198.51.100.10:53 -s rr &&
  ipvsadm -a -u 198.51.100.10:53 -r 10.244.0.2:5353 -m -w 1 &&
  ipvsadm -a -u 198.51.100.10:53 -r 10.244.0.3:5353 -m -w 1 &&
  # local: eTP=Local LoadBalancer; the ClusterIP has both endpoints, NodePort and LB IP the local one
  ipvsadm -A -t 10.96.0.13:80 -s rr &&
  ipvsadm -a -t 10.96.0.13:80 -r 10.244.0.2:8080 -m -w 1 &&
  ipvsadm -a -t 10.96.0.13:80 -r 10.244.1.2:8080 -m -w 1 &&
  ipvsadm -A -t $NODE_IP:30081 -s rr &&
  ipvsadm -a -t $NODE_IP:30081 -r 10.244.0.2:8080 -m -w 1 &&
  ipvsadm -A -t 198.51.100.20:80 -s rr &&
  ipvsadm -a -t 198.51.100.20:80 -r 10.244.0.2:8080 -m -w 1
}
# web: endpoints .2,.3 -> .3,.4; the removed TCP real servers drain at weight 0 first.
manual_apply_2() {
  ipvsadm -a -t 10.96.0.10:80 -r 10.244.0.4:8080 -m -w 1 &&
  ipvsadm -a -u 10.96.0.10:53 -r 10.244.0.4:5353 -m -w 1 &&
  ipvsadm -a -t $NODE_IP:30080 -r 10.244.0.4:8080 -m -w 1 &&
  ipvsadm -e -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 0 &&
  ipvsadm -d -u 10.96.0.10:53 -r 10.244.0.2:5353 &&
  ipvsadm -e -t $NODE_IP:30080 -r 10.244.0.2:8080 -m -w 0 &&
  ipvsadm -a -t 198.51.100.10:80 -r 10.244.0.4:8080 -m -w 1 &&
  ipvsadm -a -u 198.51.100.10:53 -r 10.244.0.4:5353 -m -w 1 &&
  ipvsadm -e -t 198.51.100.10:80 -r 10.244.0.2:8080 -m -w 0 &&
  ipvsadm -d -u 198.51.100.10:53 -r 10.244.0.2:5353
}
manual_cleanup() { ipvsadm -C && ip link del kube-ipvs0; }

# The iptables/ipset side of kube-proxy's IPVS mode, in both iptables flavours: ipsets, the
# masquerade rules, and a pod reaching itself through its Service (hairpin via KUBE-LOOP-BACK).
manual_iptables() {
  sysctl -qw net.ipv4.vs.conntrack=1
  ipset create KUBE-CLUSTER-IP hash:ip,port &&
  ipset add KUBE-CLUSTER-IP 10.96.0.10,tcp:80 &&
  ipset add KUBE-CLUSTER-IP 10.96.0.10,udp:53 &&
  ipset create KUBE-LOOP-BACK hash:ip,port,ip &&
  ipset add KUBE-LOOP-BACK 10.244.0.2,tcp:8080,10.244.0.2 &&
  ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 &&
  ipset add KUBE-NODE-PORT-TCP 30080 &&
  ipset create KUBE-IPVS-IPS hash:ip && ipset add KUBE-IPVS-IPS 10.96.0.10 &&
  ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net &&
  ipset add KUBE-LOAD-BALANCER-SOURCE-CIDR 10.96.0.10,tcp:80,10.0.0.0/8 &&
  ipset create KUBE-TEST-NET hash:net && ipset add KUBE-TEST-NET 10.244.0.0/24 || return 1
  for ipt in iptables-legacy iptables-nft; do
    $ipt -t nat -N KUBE-SERVICES && $ipt -t nat -N KUBE-POSTROUTING && $ipt -t nat -N KUBE-MARK-MASQ &&
    $ipt -t nat -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES &&
    $ipt -t nat -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES &&
    $ipt -t nat -A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING &&
    $ipt -t nat -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000 &&
    $ipt -t nat -A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ &&
    $ipt -t nat -A KUBE-SERVICES -m addrtype --dst-type LOCAL -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ &&
    $ipt -t nat -A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT &&
    $ipt -t nat -A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE &&
    $ipt -t nat -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN &&
    $ipt -t nat -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000 &&
    $ipt -t nat -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully &&
    $ipt -t filter -N KUBE-FORWARD &&
    $ipt -t filter -A FORWARD -j KUBE-FORWARD &&
    $ipt -t filter -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP &&
    $ipt -t filter -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT &&
    $ipt -t filter -A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT &&
    $ipt-save > $T/$ipt.save && grep -q 'match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE' $T/$ipt.save || {
      echo "$ipt failed"; return 1; }
    # one flavour is enough for the data path: legacy rules come out again before nft ones go in
    if [ $ipt = iptables-legacy ]; then
      $ipt -t nat -F && $ipt -t nat -X && $ipt -t filter -F && $ipt -t filter -X || return 1
    fi
  done
}

kr() { # kuberules COMMAND FILE: with the scenario's node flags
  cmd=$1 file=$2
  # shellcheck disable=SC2086
  timeout 60 kuberules $cmd --backend ipvs --node-name $NODE --node-ip $NODE_IP --config $S/proxy.yaml $KUBERULES_ARGS $file
}
kr_render_iptables() {
  # shellcheck disable=SC2086
  timeout 60 kuberules render --backend iptables --node-name $NODE --node-ip $NODE_IP $S/cluster.yaml > $T/render &&
    grep -q 'KUBE-SERVICES' $T/render
}
kr_diff_is() { # EXPECTED-EXIT FILE
  kr diff "$2" > $T/diff 2>&1; rc=$?
  [ $rc = "$1" ] && return 0
  echo "kuberules diff exited $rc, expected $1"; cat $T/diff; return 1
}

# ---- the scenario ------------------------------------------------------------------------------
. /etc/ipvs-vm.env 2>/dev/null
echo "IPVS-VM: scenario $MODE, ipvsadm $(ipvsadm -v 2>&1 | head -n 1)"
run node-setup setup_node

# 1. program cluster.yaml
case $MODE in
  manual)
    # the binary and its libraries work in the VM (it renders iptables rules; no IPVS backend yet)
    if command -v kuberules >/dev/null; then
      run kuberules-runs kr_render_iptables
    fi
    run manual-ipvsadm manual_apply_1 ;;
  kuberules)
    run kuberules-render kr render $S/cluster.yaml
    run kuberules-apply kr apply $S/cluster.yaml ;;
  *) fail mode "unknown mode $MODE"; exit 1 ;;
esac
check_state ipvs-state-1 expected-1.ipvs
check_addresses kube-ipvs0-addresses 10.96.0.10 10.96.0.11 10.96.0.12 10.96.0.13 198.51.100.10 198.51.100.20
if [ $MODE = kuberules ]; then
  run kuberules-diff-clean kr_diff_is 0 $S/cluster.yaml
  run kuberules-diff-sees-change kr_diff_is 1 $S/cluster-2.yaml
  if ipset list -n 2>/dev/null | grep -q '^KUBE-'; then
    if ipset list KUBE-CLUSTER-IP 2>/dev/null | grep -q '^10.96.0.10,tcp:80'; then pass ipset-cluster-ip
    else fail ipset-cluster-ip "KUBE-CLUSTER-IP lacks 10.96.0.10,tcp:80"; ipset list KUBE-CLUSTER-IP 2>&1 | indent; fi
  else
    skip ipset-cluster-ip "the backend programs no KUBE-* ipsets"
  fi
fi

# a pod reaching a ClusterIP keeps its own source (clusterCIDR: no masquerade)
connect tcp-clusterip 6 "pod-a@10.244.0.10 pod-b@10.244.0.10" "pod-a pod-b" tcp c1 10.96.0.10 80
connect udp-clusterip 4 "pod-a pod-b" "pod-a pod-b" udp c1 10.96.0.10 53
connect tcp-nodeport 4 "pod-a pod-b" "pod-a pod-b" tcp - $NODE_IP 30080
connect tcp-clusterip-from-node 2 "pod-a pod-b" "" tcp - 10.96.0.10 80
sticks tcp-session-affinity 4 c1 10.96.0.12 80
refused tcp-no-endpoints c1 10.96.0.11 80
refused tcp-unknown-port c1 10.96.0.10 81
# the ClusterIP of the eTP=Local service (internal policy Cluster) reaches the other node's pod too
connect tcp-clusterip-other-node 4 "pod-a pod-d" "pod-a pod-d" tcp c1 10.96.0.13 80

[ $MODE = manual ] && run kube-proxy-ipsets-iptables manual_iptables
# pod-a reaching its own Service: half the connections come back to pod-a, masqueraded to the
# node (KUBE-LOOP-BACK); the others reach pod-b with pod-a's own address
connect tcp-hairpin 4 "pod-a@10.244.0.1 pod-b@10.244.0.2" "pod-a pod-b" tcp p1 10.96.0.10 80

# The off-cluster client (ext, 192.168.50.100/.101), as the host data-path test. eTP=Cluster
# traffic is masqueraded: the pod sees the node's address on its veth (10.244.0.1).
if [ $MODE = kuberules ]; then
  connect ext-clusterip 4 "pod-a@10.244.0.1 pod-b@10.244.0.1" "pod-a pod-b" tcp ext 10.96.0.10 80
  connect ext-udp-clusterip 2 "pod-a@10.244.0.1 pod-b@10.244.0.1" "" udp ext 10.96.0.10 53
  # from the second source: .101 has a working path (the source-range check below relies on it)
  connect ext-nodeport 4 "pod-a@10.244.0.1 pod-b@10.244.0.1" "pod-a pod-b" tcp ext $NODE_IP 30080 192.168.50.101
  connect ext-externalip 4 "pod-a@10.244.0.1 pod-b@10.244.0.1" "pod-a pod-b" tcp ext 198.51.100.10 80
  # eTP=Local: only the node-local endpoint (never pod-d on node-b), the client's source kept
  connect ext-local-nodeport 4 "pod-a@192.168.50.100" "pod-a" tcp ext $NODE_IP 30081 192.168.50.100
  # LoadBalancer ingress IP, loadBalancerSourceRanges [192.168.50.100/32], also eTP=Local
  connect ext-lb-allowed-source 3 "pod-a@192.168.50.100" "pod-a" tcp ext 198.51.100.20 80 192.168.50.100
  refused ext-lb-blocked-source ext 198.51.100.20 80 192.168.50.101
  if [ "$(cat $T/why)" != timeout ]; then echo "    (kube-proxy DROPs in KUBE-SOURCE-RANGES-FIREWALL: expected a timeout, got $(cat $T/why))"; fi
else
  for f in ext-clusterip ext-udp-clusterip ext-nodeport ext-externalip ext-local-nodeport \
      ext-lb-allowed-source ext-lb-blocked-source; do
    skip $f "manual mode programs only IPVS and the ClusterIP/NodePort/hairpin iptables rules, not the external/LB/eTP=Local ones"
  done
fi

# 2. endpoint change: web moves from pods .2,.3 to .3,.4
case $MODE in
  manual) run manual-endpoint-change manual_apply_2 ;;
  kuberules) run kuberules-apply-change kr apply $S/cluster-2.yaml ;;
esac
check_state ipvs-state-2 expected-2.ipvs draining-ok
[ $MODE = kuberules ] && run kuberules-diff-clean-2 kr_diff_is 0 $S/cluster-2.yaml
connect tcp-after-change 6 "pod-b pod-c" "pod-b pod-c" tcp c1 10.96.0.10 80
connect udp-after-change 4 "pod-b pod-c" "pod-b pod-c" udp c1 10.96.0.10 53
connect tcp-nodeport-after-change 4 "pod-b pod-c" "pod-b pod-c" tcp - $NODE_IP 30080
if [ $MODE = kuberules ]; then
  connect ext-externalip-after-change 4 "pod-b@10.244.0.1 pod-c@10.244.0.1" "pod-b pod-c" tcp ext 198.51.100.10 80
fi

# 3. cleanup
case $MODE in
  manual) run manual-cleanup manual_cleanup ;;
  kuberules) run kuberules-cleanup timeout 60 kuberules cleanup --backend ipvs ;;
esac
left=$(ipvs_state)
if [ -z "$left" ]; then pass cleanup-no-virtual-servers; else fail cleanup-no-virtual-servers "left: $(echo "$left" | tr '\n' ' ')"; fi
if [ $MODE = kuberules ]; then
  if ip link show kube-ipvs0 >/dev/null 2>&1; then
    fail cleanup-no-kube-ipvs0 "kube-ipvs0 remains: $(ip -4 -o addr show dev kube-ipvs0 | awk '{ print $4 }' | tr '\n' ' ')"
  else pass cleanup-no-kube-ipvs0; fi
  sets=$(ipset list -n 2>/dev/null | grep '^KUBE-' | tr '\n' ' ')
  if [ -z "$sets" ]; then pass cleanup-no-ipsets; else fail cleanup-no-ipsets "left: $sets"; fi
  chains=$( { iptables-nft-save; iptables-legacy-save; } 2>/dev/null | grep -E '^[:-].*KUBE-' | tr '\n' ';')
  if [ -z "$chains" ]; then pass cleanup-no-iptables; else fail cleanup-no-iptables "left: $chains"; fi
  refused ext-clusterip-after-cleanup ext 10.96.0.10 80
fi
exit 0
