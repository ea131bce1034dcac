import CNetfilter
import IpvsApply
import IpvsModel
import KubeModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@inline(__always) private func u16<T: BinaryInteger>(_ x: T) -> UInt16 { UInt16(truncatingIfNeeded: x) }
@inline(__always) private func u8<T: BinaryInteger>(_ x: T) -> UInt8 { UInt8(truncatingIfNeeded: x) }

/// Attributes of one nesting level: type (without the NESTED / BYTEORDER bits) → payload.
struct NetlinkAttributes {
    private(set) var values: [UInt16: [UInt8]] = [:]

    init(_ start: UnsafeRawPointer, length: Int) {
        var off = 0
        while off + 4 <= length {
            let len = Int(start.loadUnaligned(fromByteOffset: off, as: UInt16.self))
            let type = start.loadUnaligned(fromByteOffset: off + 2, as: UInt16.self) & 0x3fff
            guard len >= 4, off + len <= length else { break }
            values[type] = Array(UnsafeRawBufferPointer(start: start + off + 4, count: len - 4))
            off += (len + 3) & ~3
        }
    }

    init(_ bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { NetlinkAttributes($0.baseAddress!, length: $0.count) }
    }

    subscript(_ type: UInt16) -> [UInt8]? { values[type] }
    func u16(_ t: UInt16) -> UInt16? {
        values[t].flatMap { $0.count >= 2 ? $0.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } : nil }
    }
    func u32(_ t: UInt16) -> UInt32? {
        values[t].flatMap { $0.count >= 4 ? $0.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } : nil }
    }
    /// A big-endian 16-bit value (ports).
    func be16(_ t: UInt16) -> UInt16? { values[t].flatMap { $0.count >= 2 ? UInt16($0[0]) << 8 | UInt16($0[1]) : nil } }
    func string(_ t: UInt16) -> String? { values[t].map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } }
}

/// One libmnl netlink socket (generic netlink or rtnetlink) with a request/response loop.
final class NetlinkSocket {
    private let nl: OpaquePointer
    private var seq: UInt32
    private let recvBuffer: UnsafeMutableRawPointer
    private let recvBufferSize = 1 << 18
    let name: String

    init(protocol proto: Int32, name: String) throws {
        do {
            nl = try openBoundSocket(proto)
        } catch {
            throw IpvsKernelError.io(operation: "\(error.step) \(name) socket", errno: error.errno, message: errnoText(error.errno))
        }
        self.name = name
        seq = UInt32(truncatingIfNeeded: time(nil))
        recvBuffer = UnsafeMutableRawPointer.allocate(byteCount: recvBufferSize, alignment: 8)
    }

    deinit {
        mnl_socket_close(nl)
        recvBuffer.deallocate()
    }

    /// Sends one message (built by `build` after the header) and hands every answer message to
    /// `each` until DONE or the final ACK/error. Returns the errno of a final error, 0 if none.
    func request(type: UInt16, flags: Int32, build: (UnsafeMutablePointer<nlmsghdr>) -> Void,
                 each: (UnsafeMutablePointer<nlmsghdr>) throws -> Void = { _ in }) throws -> Int32 {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 8)
        defer { buf.deallocate() }
        memset(buf, 0, 8192)
        seq &+= 1
        let s = seq
        let nlh = mnl_nlmsg_put_header(buf)!
        nlh.pointee.nlmsg_type = type
        nlh.pointee.nlmsg_flags = u16(flags)
        nlh.pointee.nlmsg_seq = s
        build(nlh)
        guard mnl_socket_sendto(nl, nlh, Int(nlh.pointee.nlmsg_len)) >= 0 else {
            throw IpvsKernelError.io(operation: "send \(name) request", errno: errno, message: errnoText(errno))
        }
        let isDump = flags & NLM_F_DUMP == NLM_F_DUMP
        do {
            // A plain GET without ACK ends with its one answer.
            return try receiveAnswers(nl, buffer: recvBuffer, size: recvBufferSize, seq: s,
                                      singleAnswer: !isDump && flags & NLM_F_ACK == 0, each: each)
        } catch let e as NetlinkReceiveFailure {
            throw IpvsKernelError.io(operation: "receive \(name) response", errno: e.errno, message: errnoText(e.errno))
        }
    }
}

/// Payload start and length of a message after a fixed-size family header.
private func payload(_ h: UnsafeMutablePointer<nlmsghdr>, header: Int) -> (UnsafeRawPointer, Int) {
    let base = UnsafeRawPointer(h) + MemoryLayout<nlmsghdr>.size + ((header + 3) & ~3)
    return (base, Int(h.pointee.nlmsg_len) - MemoryLayout<nlmsghdr>.size - ((header + 3) & ~3))
}

/// The real IPVS kernel: generic netlink family "IPVS" (services, real servers) and rtnetlink
/// (the dummy interface and its addresses), both over libmnl.
public final class IpvsNetlink: IpvsKernel {
    private let genl: NetlinkSocket
    private let links: RtnetlinkLinks
    private let family: UInt16

    /// Opens both sockets and resolves the IPVS family; throws `.unavailable` when the kernel has no IPVS.
    public init() throws {
        genl = try NetlinkSocket(protocol: NETLINK_GENERIC, name: "generic netlink")
        links = try RtnetlinkLinks()
        var id: UInt16?
        let err = try genl.request(type: u16(GENL_ID_CTRL), flags: NLM_F_REQUEST | NLM_F_ACK, build: { nlh in
            Self.genlHeader(nlh, cmd: u8(CTRL_CMD_GETFAMILY), version: 1)
            mnl_attr_put_strz(nlh, u16(CTRL_ATTR_FAMILY_NAME), IPVS_GENL_NAME)
        }, each: { h in
            let (p, n) = payload(h, header: MemoryLayout<genlmsghdr>.size)
            id = NetlinkAttributes(p, length: n).u16(u16(CTRL_ATTR_FAMILY_ID))
        })
        if err == ENOENT { throw IpvsKernelError.unavailable }
        if err != 0 { throw IpvsKernelError.io(operation: "resolve generic netlink family IPVS", errno: err, message: errnoText(err)) }
        guard let id else { throw IpvsKernelError.unavailable }
        family = id
    }

    private static func genlHeader(_ nlh: UnsafeMutablePointer<nlmsghdr>, cmd: UInt8, version: UInt8) {
        let g = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<genlmsghdr>.size)!.assumingMemoryBound(to: genlmsghdr.self)
        g.pointee.cmd = cmd
        g.pointee.version = version
    }

    // MARK: IPVS encoding

    private static func af(_ f: IPFamily) -> UInt16 { u16(f == .ipv4 ? AF_INET : AF_INET6) }
    private static func proto(_ p: L4Protocol) -> UInt16 { UInt16(p.number) }

    /// union nf_inet_addr: 16 bytes, IPv4 in the first 4 (as ipvsadm sends it).
    private static func putAddress(_ nlh: UnsafeMutablePointer<nlmsghdr>, _ type: UInt16, _ ip: IPAddress) {
        var bytes = ip.bytes
        bytes += [UInt8](repeating: 0, count: 16 - bytes.count)
        bytes.withUnsafeBytes { mnl_attr_put(nlh, type, 16, $0.baseAddress) }
    }

    /// IPVS_CMD_ATTR_SERVICE: the key, plus the settings when `full` (NEW/SET_SERVICE).
    private static func putService(_ nlh: UnsafeMutablePointer<nlmsghdr>, _ key: IpvsServiceKey, settings: IpvsVirtualServer?) {
        let nest = mnl_attr_nest_start(nlh, u16(IPVS_CMD_ATTR_SERVICE))
        mnl_attr_put_u16(nlh, u16(IPVS_SVC_ATTR_AF), af(key.family))
        mnl_attr_put_u16(nlh, u16(IPVS_SVC_ATTR_PROTOCOL), proto(key.proto))
        putAddress(nlh, u16(IPVS_SVC_ATTR_ADDR), key.address)
        mnl_attr_put_u16(nlh, u16(IPVS_SVC_ATTR_PORT), UInt16(key.port).bigEndian)
        if let s = settings {
            mnl_attr_put_strz(nlh, u16(IPVS_SVC_ATTR_SCHED_NAME), s.scheduler)
            var flags = ip_vs_flags(flags: s.flags, mask: 0xffff_ffff)
            mnl_attr_put(nlh, u16(IPVS_SVC_ATTR_FLAGS), MemoryLayout<ip_vs_flags>.size, &flags)
            mnl_attr_put_u32(nlh, u16(IPVS_SVC_ATTR_TIMEOUT), s.timeout)
            mnl_attr_put_u32(nlh, u16(IPVS_SVC_ATTR_NETMASK), s.netmask)
        }
        mnl_attr_nest_end(nlh, nest)
    }

    /// IPVS_CMD_ATTR_DEST: address and port, plus the settings when `full` (NEW/SET_DEST).
    private static func putDestination(_ nlh: UnsafeMutablePointer<nlmsghdr>, _ d: IpvsRealServer, full: Bool) {
        let nest = mnl_attr_nest_start(nlh, u16(IPVS_CMD_ATTR_DEST))
        putAddress(nlh, u16(IPVS_DEST_ATTR_ADDR), d.address)
        mnl_attr_put_u16(nlh, u16(IPVS_DEST_ATTR_PORT), UInt16(d.port).bigEndian)
        mnl_attr_put_u16(nlh, u16(IPVS_DEST_ATTR_ADDR_FAMILY), af(d.address.family))
        if full {
            mnl_attr_put_u32(nlh, u16(IPVS_DEST_ATTR_FWD_METHOD), d.forwardMethod)
            mnl_attr_put_u32(nlh, u16(IPVS_DEST_ATTR_WEIGHT), UInt32(truncatingIfNeeded: d.weight))
            mnl_attr_put_u32(nlh, u16(IPVS_DEST_ATTR_U_THRESH), 0)
            mnl_attr_put_u32(nlh, u16(IPVS_DEST_ATTR_L_THRESH), 0)
        }
        mnl_attr_nest_end(nlh, nest)
    }

    static func address(_ bytes: [UInt8]?, family: UInt16) -> IPAddress? {
        guard let b = bytes else { return nil }
        if family == u16(AF_INET), b.count >= 4 {
            return IPAddress(v4: UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3]))
        }
        if family == u16(AF_INET6), b.count >= 16 {
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(b[i]); lo = lo << 8 | UInt64(b[8 + i]) }
            return IPAddress(v6: hi, lo)
        }
        return nil
    }

    private static func l4(_ n: UInt16) -> L4Protocol? { L4Protocol.allCases.first { UInt16($0.number) == n } }

    /// One IPVS request with an ACK; a refusal names the object.
    private func ipvs(_ cmd: Int, _ object: String, _ build: (UnsafeMutablePointer<nlmsghdr>) -> Void) throws {
        let err = try genl.request(type: family, flags: NLM_F_REQUEST | NLM_F_ACK, build: { nlh in
            Self.genlHeader(nlh, cmd: u8(cmd), version: u8(IPVS_GENL_VERSION))
            build(nlh)
        })
        if err != 0 { throw IpvsKernelError.refused(object: object, errno: err, message: errnoText(err)) }
    }

    // MARK: IpvsKernel

    public func read(interface: String) throws -> IpvsKernelState {
        var state = IpvsKernelState()
        var services = [IpvsVirtualServer]()
        let err = try genl.request(type: family, flags: NLM_F_REQUEST | NLM_F_DUMP, build: { nlh in
            Self.genlHeader(nlh, cmd: u8(IPVS_CMD_GET_SERVICE), version: u8(IPVS_GENL_VERSION))
        }, each: { h in
            let (p, n) = payload(h, header: MemoryLayout<genlmsghdr>.size)
            guard let nest = NetlinkAttributes(p, length: n)[u16(IPVS_CMD_ATTR_SERVICE)] else { return }
            let a = NetlinkAttributes(nest)
            // Firewall-mark services have no address: never ours.
            guard let af = a.u16(u16(IPVS_SVC_ATTR_AF)), let proto = a.u16(u16(IPVS_SVC_ATTR_PROTOCOL)).flatMap(Self.l4),
                  let ip = Self.address(a[u16(IPVS_SVC_ATTR_ADDR)], family: af), let port = a.be16(u16(IPVS_SVC_ATTR_PORT))
            else { return }
            let flags = a[u16(IPVS_SVC_ATTR_FLAGS)].flatMap { $0.count >= 4 ? $0.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } : nil } ?? 0
            services.append(IpvsVirtualServer(key: IpvsServiceKey(proto: proto, address: ip, port: Int(port)),
                                              scheduler: a.string(u16(IPVS_SVC_ATTR_SCHED_NAME)) ?? "",
                                              flags: flags, timeout: a.u32(u16(IPVS_SVC_ATTR_TIMEOUT)) ?? 0,
                                              netmask: a.u32(u16(IPVS_SVC_ATTR_NETMASK))))
        })
        if err != 0 { throw IpvsKernelError.io(operation: "dump IPVS services", errno: err, message: errnoText(err)) }
        for i in services.indices {
            services[i].destinations = try destinations(of: services[i].key)
        }
        state.services = services
        if let addresses = try links.addresses(on: interface) {
            state.interfaceExists = true
            state.addresses = addresses
        }
        return state
    }

    private func destinations(of key: IpvsServiceKey) throws -> [IpvsRealServer] {
        var out = [IpvsRealServer]()
        let err = try genl.request(type: family, flags: NLM_F_REQUEST | NLM_F_DUMP, build: { nlh in
            Self.genlHeader(nlh, cmd: u8(IPVS_CMD_GET_DEST), version: u8(IPVS_GENL_VERSION))
            Self.putService(nlh, key, settings: nil)
        }, each: { h in
            let (p, n) = payload(h, header: MemoryLayout<genlmsghdr>.size)
            guard let nest = NetlinkAttributes(p, length: n)[u16(IPVS_CMD_ATTR_DEST)] else { return }
            let a = NetlinkAttributes(nest)
            let af = a.u16(u16(IPVS_DEST_ATTR_ADDR_FAMILY)) ?? Self.af(key.family)
            guard let ip = Self.address(a[u16(IPVS_DEST_ATTR_ADDR)], family: af), let port = a.be16(u16(IPVS_DEST_ATTR_PORT)) else {
                throw IpvsKernelError.decode(object: "real server of virtual server \(key)", reason: "no address or port")
            }
            out.append(IpvsRealServer(address: ip, port: Int(port),
                                      weight: Int(Int32(bitPattern: a.u32(u16(IPVS_DEST_ATTR_WEIGHT)) ?? 0)),
                                      forwardMethod: (a.u32(u16(IPVS_DEST_ATTR_FWD_METHOD)) ?? 0) & UInt32(IP_VS_CONN_F_FWD_MASK),
                                      activeConnections: Int(a.u32(u16(IPVS_DEST_ATTR_ACTIVE_CONNS)) ?? 0),
                                      inactiveConnections: Int(a.u32(u16(IPVS_DEST_ATTR_INACT_CONNS)) ?? 0)))
        })
        if err != 0 { throw IpvsKernelError.io(operation: "dump real servers of virtual server \(key)", errno: err, message: errnoText(err)) }
        return out.sorted()
    }

    public func perform(_ change: IpvsChange) throws {
        let object = change.object
        switch change {
        case .addService(let s):
            try ipvs(Int(IPVS_CMD_NEW_SERVICE), object) { Self.putService($0, s.key, settings: s) }
        case .updateService(let s):
            try ipvs(Int(IPVS_CMD_SET_SERVICE), object) { Self.putService($0, s.key, settings: s) }
        case .deleteService(let k):
            try ipvs(Int(IPVS_CMD_DEL_SERVICE), object) { Self.putService($0, k, settings: nil) }
        case .addDestination(let k, let d):
            try ipvs(Int(IPVS_CMD_NEW_DEST), object) { Self.putService($0, k, settings: nil); Self.putDestination($0, d, full: true) }
        case .updateDestination(let k, let d):
            try ipvs(Int(IPVS_CMD_SET_DEST), object) { Self.putService($0, k, settings: nil); Self.putDestination($0, d, full: true) }
        case .deleteDestination(let k, let d):
            try ipvs(Int(IPVS_CMD_DEL_DEST), object) { Self.putService($0, k, settings: nil); Self.putDestination($0, d, full: false) }
        case .createInterface(let name):
            try links.createDummy(name)
        case .deleteInterface(let name):
            try links.deleteDummy(name)
        case .addAddress(let ip, let name):
            try links.addAddress(ip, on: name)
        case .deleteAddress(let ip, let name):
            try links.deleteAddress(ip, on: name)
        }
    }
}

/// The dummy interface and its addresses over rtnetlink (libmnl).
public final class RtnetlinkLinks {
    private let route: NetlinkSocket

    public init() throws {
        route = try NetlinkSocket(protocol: NETLINK_ROUTE, name: "rtnetlink")
    }

    /// The addresses on an interface, or nil if it does not exist.
    public func addresses(on name: String) throws -> [IPAddress]? {
        guard let (index, _) = try interfaceIndex(name) else { return nil }
        return try addresses(ofInterface: index)
    }

    /// RTM_NEWLINK of kind dummy (left down, as kube-proxy leaves kube-ipvs0).
    public func createDummy(_ name: String) throws {
        try rtnl(u16(RTM_NEWLINK), NLM_F_CREATE | NLM_F_EXCL, "interface \(name)") { nlh in
            let ifi = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifinfomsg>.size)!.assumingMemoryBound(to: ifinfomsg.self)
            ifi.pointee.ifi_family = u8(AF_UNSPEC)
            mnl_attr_put_strz(nlh, u16(IFLA_IFNAME), name)
            let info = mnl_attr_nest_start(nlh, u16(IFLA_LINKINFO))
            mnl_attr_put_strz(nlh, u16(IFLA_INFO_KIND), "dummy")
            mnl_attr_nest_end(nlh, info)
        }
    }

    /// RTM_DELLINK, only if the interface is a dummy one.
    public func deleteDummy(_ name: String) throws {
        let object = "interface \(name)"
        guard let (index, kind) = try interfaceIndex(name) else {
            throw IpvsKernelError.refused(object: object, errno: ENODEV, message: errnoText(ENODEV))
        }
        guard kind == "dummy" else {
            throw IpvsKernelError.refused(object: object, errno: EINVAL, message: "not a dummy interface (kind \"\(kind)\"): left alone")
        }
        try rtnl(u16(RTM_DELLINK), 0, object) { nlh in
            let ifi = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifinfomsg>.size)!.assumingMemoryBound(to: ifinfomsg.self)
            ifi.pointee.ifi_family = u8(AF_UNSPEC)
            ifi.pointee.ifi_index = index
        }
    }

    public func addAddress(_ ip: IPAddress, on name: String) throws { try address(add: true, ip, name) }
    public func deleteAddress(_ ip: IPAddress, on name: String) throws { try address(add: false, ip, name) }

    /// RTM_NEWADDR / RTM_DELADDR of ip/32 (ip/128), scope global, IFA_LOCAL and IFA_ADDRESS (as `ip addr add`).
    private func address(add: Bool, _ ip: IPAddress, _ name: String) throws {
        let object = "address \(ip)/\(ip.family.bits) on \(name)"
        guard let (index, _) = try interfaceIndex(name) else {
            throw IpvsKernelError.refused(object: object, errno: ENODEV, message: errnoText(ENODEV))
        }
        try rtnl(u16(add ? RTM_NEWADDR : RTM_DELADDR), add ? NLM_F_CREATE | NLM_F_EXCL : 0, object) { nlh in
            let ifa = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifaddrmsg>.size)!.assumingMemoryBound(to: ifaddrmsg.self)
            ifa.pointee.ifa_family = u8(ip.family == .ipv4 ? AF_INET : AF_INET6)
            ifa.pointee.ifa_prefixlen = u8(ip.family.bits)
            ifa.pointee.ifa_scope = 0   // RT_SCOPE_UNIVERSE
            ifa.pointee.ifa_index = UInt32(index)
            let bytes = ip.bytes
            bytes.withUnsafeBytes { raw in
                mnl_attr_put(nlh, u16(IFA_LOCAL), bytes.count, raw.baseAddress)
                mnl_attr_put(nlh, u16(IFA_ADDRESS), bytes.count, raw.baseAddress)
            }
        }
    }


    private func rtnl(_ type: UInt16, _ flags: Int32, _ object: String, _ build: (UnsafeMutablePointer<nlmsghdr>) -> Void) throws {
        let err = try route.request(type: type, flags: NLM_F_REQUEST | NLM_F_ACK | flags, build: build)
        if err != 0 { throw IpvsKernelError.refused(object: object, errno: err, message: errnoText(err)) }
    }

    /// The interface's index and link kind, or nil if there is no such interface.
    private func interfaceIndex(_ name: String) throws -> (index: Int32, kind: String)? {
        var found: (Int32, String)?
        let err = try route.request(type: u16(RTM_GETLINK), flags: NLM_F_REQUEST, build: { nlh in
            let ifi = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifinfomsg>.size)!.assumingMemoryBound(to: ifinfomsg.self)
            ifi.pointee.ifi_family = u8(AF_UNSPEC)
            mnl_attr_put_strz(nlh, u16(IFLA_IFNAME), name)
        }, each: { h in
            guard h.pointee.nlmsg_type == u16(RTM_NEWLINK) else { return }
            let ifi = (UnsafeRawPointer(h) + MemoryLayout<nlmsghdr>.size).loadUnaligned(as: ifinfomsg.self)
            let (p, n) = payload(h, header: MemoryLayout<ifinfomsg>.size)
            let kind = NetlinkAttributes(p, length: n)[u16(IFLA_LINKINFO)]
                .flatMap { NetlinkAttributes($0).string(u16(IFLA_INFO_KIND)) } ?? ""
            found = (ifi.ifi_index, kind)
        })
        if err == ENODEV { return nil }
        if err != 0 { throw IpvsKernelError.io(operation: "get interface \(name)", errno: err, message: errnoText(err)) }
        return found
    }

    /// The addresses on one interface (RTM_GETADDR dump, filtered by index).
    private func addresses(ofInterface index: Int32) throws -> [IPAddress] {
        var out = [IPAddress]()
        let err = try route.request(type: u16(RTM_GETADDR), flags: NLM_F_REQUEST | NLM_F_DUMP, build: { nlh in
            let ifa = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifaddrmsg>.size)!.assumingMemoryBound(to: ifaddrmsg.self)
            ifa.pointee.ifa_family = u8(AF_UNSPEC)
        }, each: { h in
            guard h.pointee.nlmsg_type == u16(RTM_NEWADDR) else { return }
            let ifa = (UnsafeRawPointer(h) + MemoryLayout<nlmsghdr>.size).loadUnaligned(as: ifaddrmsg.self)
            guard Int32(ifa.ifa_index) == index else { return }
            let (p, n) = payload(h, header: MemoryLayout<ifaddrmsg>.size)
            let a = NetlinkAttributes(p, length: n)
            if let ip = IpvsNetlink.address(a[u16(IFA_LOCAL)] ?? a[u16(IFA_ADDRESS)], family: UInt16(ifa.ifa_family)) { out.append(ip) }
        })
        if err != 0 { throw IpvsKernelError.io(operation: "dump interface addresses", errno: err, message: errnoText(err)) }
        return out.sorted()
    }
}
