import socket, sys, threading
# server.py NAME [ipv6]
name = sys.argv[1]
family, anyaddr = (socket.AF_INET6, "::") if sys.argv[2:] == ["ipv6"] else (socket.AF_INET, "0.0.0.0")
def tcp():
    s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((anyaddr, 8080)); s.listen(50)
    while True:
        c, a = s.accept(); c.sendall(f"{name} {a[0]}\n".encode()); c.close()
def udp():
    u = socket.socket(family, socket.SOCK_DGRAM); u.bind((anyaddr, 5353))
    while True:
        d, a = u.recvfrom(100); u.sendto(f"{name} {a[0]}\n".encode(), a)
threading.Thread(target=udp, daemon=True).start()
tcp()
