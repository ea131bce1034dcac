# client.py tcp|udp HOST PORT COUNT [SOURCE]: COUNT connections, one line of "answer=count" tokens,
# where an answer is "podN@peer" (the server's name and the source it saw) or an error name.
import collections, socket, sys
kind, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
src = sys.argv[5] if len(sys.argv) > 5 else None
seen = collections.Counter()
for _ in range(count):
    try:
        if kind == "tcp":
            s = socket.create_connection((host, port), 1, source_address=(src, 0) if src else None)
            s.settimeout(1)
            answer = s.recv(100).decode().split()
            s.close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
            if src: s.bind((src, 0))
            s.sendto(b"x", (host, port)); answer = s.recv(100).decode().split(); s.close()
        seen["%s@%s" % (answer[0], answer[1])] += 1
    except Exception as e:
        seen[type(e).__name__] += 1
print(" ".join("%s=%d" % kv for kv in sorted(seen.items())))
