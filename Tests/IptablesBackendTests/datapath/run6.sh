#!/bin/bash
# IPv6 data-path test: ClientIP affinity through the nftables rules kuberules applies over
# netlink (nft 1.0.6 cannot load that IPv6 record rule from text). Usage: run6.sh KUBERULES
#
#   client ns (fd00:50::100) --veth-- node ns (fd00:50::1, kuberules rules) --veth-- pod2 (fd00:244::2)
#                                                                            `-veth-- pod3 (fd00:244::3)
# Prints "FLOW <name> <answer>=<count> ..." lines as run.sh does. Every namespace is created here
# (names carry our PID) and removed on exit; the test runs this script under `unshare -n` too.
set -u
B=$1; DIR=$(cd "$(dirname "$0")" && pwd)
N=kr6n$$; C=kr6c$$; PODS="kr6p2$$ kr6p3$$"
cleanup() { kill $(jobs -p) 2>/dev/null; for ns in $N $C $PODS; do ip netns del $ns 2>/dev/null; done; }
trap cleanup EXIT
for ns in $N $C $PODS; do ip netns add $ns; ip -n $ns link set lo up; done
ip netns exec $N sysctl -qw net.ipv6.conf.all.forwarding=1
ip link add ext netns $N type veth peer name eth0 netns $C
ip -n $N link set ext up; ip -n $C link set eth0 up
ip -n $N addr add fd00:50::1/64 dev ext nodad; ip -n $C addr add fd00:50::100/64 dev eth0 nodad
ip -n $C route add default via fd00:50::1
i=1
for P in $PODS; do
  i=$((i+1))
  ip link add v$i netns $N type veth peer name eth0 netns $P
  ip -n $N link set v$i up; ip -n $P link set eth0 up
  ip -n $P addr add fd00:244::$i/128 dev eth0 nodad
  ip -n $N addr add fe80::1/64 dev v$i nodad
  ip -n $N route add fd00:244::$i/128 dev v$i
  ip -n $P route add fe80::1 dev eth0; ip -n $P route add default via fe80::1 dev eth0
  ip netns exec $P timeout 60 python3 "$DIR/server.py" pod$i ipv6 &
done
ip -n $N route add fd00:96::/112 dev lo
sleep 2
flow() { local name=$1 ns=$2; shift 2; echo "FLOW $name $(ip netns exec $ns timeout 50 python3 "$DIR/client.py" "$@")"; }
ip netns exec $N "$B" apply --backend nftables --ip-family ipv6 --node-name node-a --state-dir "" "$DIR/services6.yaml" >/dev/null || exit 3
flow client-affinity6 $C tcp fd00:96::10 80 12
flow client-plain6    $C tcp fd00:96::11 80 30
flow node-affinity6   $N tcp fd00:96::10 80 12
echo "FLOW records6 entries=$(ip netns exec $N nft list map ip6 kuberules affinity | grep -o ' timeout 3h expires ' | wc -l)"
ip netns exec $N "$B" cleanup --backend nftables --state-dir "" >/dev/null || exit 3
echo "LEFT $(ip netns exec $N nft list ruleset | wc -l)"
