import socket, sys, threading
name = sys.argv[1]
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080)); s.listen(50)
    while True:
        c, a = s.accept(); c.sendall(f"{name} {a[0]}\n".encode()); c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
    while True:
        d, a = u.recvfrom(100); u.sendto(f"{name} {a[0]}\n".encode(), a)
threading.Thread(target=udp, daemon=True).start()
tcp()
