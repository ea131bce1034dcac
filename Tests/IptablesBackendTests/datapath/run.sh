#!/bin/bash
# Data-path smoke test: a node namespace with two pod namespaces on veths, kuberules rules in
# the node namespace, real TCP/UDP connections. Usage: run.sh KUBERULES nft|ipt
# Every namespace is created here (names carry our PID) and removed on exit; nothing touches
# the caller's network namespace. Connections have 1-2 s timeouts; servers are killed on exit.
set -u
B=$1; MODE=$2; DIR=$(cd "$(dirname "$0")" && pwd)
N=krn$$; P1=krp1$$; P2=krp2$$
cleanup() { kill $(jobs -p) 2>/dev/null; ip netns del $N 2>/dev/null; ip netns del $P1 2>/dev/null; ip netns del $P2 2>/dev/null; }
trap cleanup EXIT
ip netns add $N; ip netns add $P1; ip netns add $P2
ip -n $N link set lo up
i=0
for P in $P1 $P2; do
  i=$((i+1))
  ip link add v$i netns $N type veth peer name eth0 netns $P
  ip -n $P link set lo up; ip -n $P link set eth0 up
  ip -n $P addr add 10.244.0.$((i+1))/24 dev eth0
  ip -n $N link set v$i up
  ip -n $N addr add 10.244.0.1/32 dev v$i
  ip -n $N route add 10.244.0.$((i+1))/32 dev v$i
  ip netns exec $N sysctl -qw net.ipv4.conf.v$i.proxy_arp=1
  ip -n $P route add default via 10.244.0.1 dev eth0 onlink
  ip netns exec $P timeout 60 python3 "$DIR/server.py" pod$i &
done
ip -n $N addr add 192.168.50.1/32 dev lo
# A route for the service range (as a node has), so unanswered service traffic reaches FORWARD.
ip -n $N route add 10.96.0.0/16 dev lo
ip netns exec $N sysctl -qw net.ipv4.ip_forward=1
sleep 1
if [ "$MODE" = nft ]; then
  ip netns exec $N "$B" apply --backend nftables --ip-family ipv4 --node-name node --node-ip 192.168.50.1 "$DIR/cluster.yaml" >/dev/null || exit 3
else
  ip netns exec $N sh -c "'$B' render --with-jumps --node-name node --node-ip 192.168.50.1 '$DIR/cluster.yaml' | iptables-restore --noflush" || exit 3
fi
tcp() { ip netns exec $1 timeout 3 python3 -c "
import socket
try:
    s = socket.create_connection(('$2', $3), 2); print(s.recv(100).decode().strip())
except Exception as e: print(type(e).__name__)"; }
for k in $(seq 12); do echo "clusterip $(tcp $P1 10.96.0.10 80)"; done
echo "udp $(ip netns exec $P1 timeout 3 python3 -c "
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2); u.sendto(b'x', ('10.96.0.10', 53))
try: print(u.recv(100).decode().strip())
except Exception as e: print(type(e).__name__)")"
echo "nodeport $(tcp $N 192.168.50.1 30080)"
echo "noendpoints $(tcp $P1 10.96.0.11 80)"
echo "unknownport $(tcp $P1 10.96.0.10 81)"
