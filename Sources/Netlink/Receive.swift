import CNetfilter
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `recvfrom` on a netlink socket failed (the errno).
struct NetlinkReceiveFailure: Error {
    let errno: Int32
}

/// Why a netlink socket could not be set up: the step ("open", "bind") and errno.
struct NetlinkOpenFailure: Error {
    let step: String
    let errno: Int32
}

/// A libmnl socket of protocol `proto`, bound with an automatic port id.
func openBoundSocket(_ proto: Int32) throws(NetlinkOpenFailure) -> OpaquePointer {
    guard let s = mnl_socket_open(proto) else { throw NetlinkOpenFailure(step: "open", errno: errno) }
    guard mnl_socket_bind(s, 0, pid_t(MNL_SOCKET_AUTOPID)) >= 0 else {
        let e = errno
        mnl_socket_close(s)
        throw NetlinkOpenFailure(step: "bind", errno: e)
    }
    return s
}

/// Reads the answers to request `seq` and hands each data message to `each`, until NLMSG_DONE,
/// NLMSG_ERROR (its ACK or error) or, with `singleAnswer`, the first data message (a plain GET
/// without ACK). Returns 0, or the errno the kernel answered with. Shared by the nf_tables,
/// IPVS and rtnetlink sockets.
func receiveAnswers(_ nl: OpaquePointer, buffer: UnsafeMutableRawPointer, size: Int, seq: UInt32, singleAnswer: Bool,
                    each: (UnsafeMutablePointer<nlmsghdr>) throws -> Void) throws -> Int32 {
    while true {
        let n = mnl_socket_recvfrom(nl, buffer, size)
        if n < 0 {
            if errno == EINTR { continue }
            throw NetlinkReceiveFailure(errno: errno)
        }
        var off = 0
        while off + MemoryLayout<nlmsghdr>.size <= n {
            let h = (buffer + off).assumingMemoryBound(to: nlmsghdr.self)
            let len = Int(h.pointee.nlmsg_len)
            guard len >= MemoryLayout<nlmsghdr>.size, off + len <= n else { break }
            off += (len + 3) & ~3
            guard h.pointee.nlmsg_seq == seq else { continue }
            switch Int32(h.pointee.nlmsg_type) {
            case NLMSG_DONE:
                return 0
            case NLMSG_ERROR:
                let err = (UnsafeMutableRawPointer(h) + MemoryLayout<nlmsghdr>.size).load(as: Int32.self)
                return -err
            default:
                try each(h)
                if singleAnswer { return 0 }
            }
        }
    }
}
