import IpvsModel
import KubeModel

/// One kernel request. IPVS has no transactions: each change is applied on its own, in the
/// order the diff lists them.
public enum IpvsChange: Sendable, Hashable, CustomStringConvertible {
    /// RTM_NEWLINK of a dummy interface (left down, as kube-proxy leaves kube-ipvs0).
    case createInterface(String)
    case deleteInterface(String)
    /// RTM_NEWADDR / RTM_DELADDR of a /32 or /128.
    case addAddress(IPAddress, interface: String)
    case deleteAddress(IPAddress, interface: String)
    /// IPVS_CMD_NEW_SERVICE / SET_SERVICE (settings only; real servers are separate changes).
    case addService(IpvsVirtualServer)
    case updateService(IpvsVirtualServer)
    case deleteService(IpvsServiceKey)
    /// IPVS_CMD_NEW_DEST / SET_DEST / DEL_DEST.
    case addDestination(IpvsServiceKey, IpvsRealServer)
    case updateDestination(IpvsServiceKey, IpvsRealServer)
    case deleteDestination(IpvsServiceKey, IpvsRealServer)

    /// The object, for error messages: `virtual server TCP 10.96.0.1:443`.
    public var object: String {
        switch self {
        case .createInterface(let n), .deleteInterface(let n): return "interface \(n)"
        case .addAddress(let ip, let n), .deleteAddress(let ip, let n):
            return "address \(ip)/\(ip.family.bits) on \(n)"
        case .addService(let s), .updateService(let s): return "virtual server \(s.key)"
        case .deleteService(let k): return "virtual server \(k)"
        case .addDestination(let k, let d), .updateDestination(let k, let d), .deleteDestination(let k, let d):
            return "real server \(d.hostPort) of virtual server \(k)"
        }
    }

    /// One line for `diff` / `--dry-run`, in ipvsadm / ip terms.
    public var description: String {
        switch self {
        case .createInterface(let n): return "ip link add \(n) type dummy"
        case .deleteInterface(let n): return "ip link del \(n)"
        case .addAddress(let ip, let n): return "ip addr add \(ip)/\(ip.family.bits) dev \(n)"
        case .deleteAddress(let ip, let n): return "ip addr del \(ip)/\(ip.family.bits) dev \(n)"
        case .addService(let s): return IpvsText.ipvsadm([IpvsVirtualServer(key: s.key, scheduler: s.scheduler, flags: s.flags, timeout: s.timeout, netmask: s.netmask)]).trimmingSuffixNewline
        case .updateService(let s): return "-E" + IpvsText.ipvsadm([IpvsVirtualServer(key: s.key, scheduler: s.scheduler, flags: s.flags, timeout: s.timeout, netmask: s.netmask)]).dropFirst(2).trimmingSuffixNewline
        case .deleteService(let k): return "-D \(IpvsText.serviceArgs(k))"
        case .addDestination(let k, let d): return "-a \(IpvsText.serviceArgs(k)) -r \(d.hostPort) -m -w \(d.weight)"
        case .updateDestination(let k, let d): return "-e \(IpvsText.serviceArgs(k)) -r \(d.hostPort) -m -w \(d.weight)"
        case .deleteDestination(let k, let d): return "-d \(IpvsText.serviceArgs(k)) -r \(d.hostPort)"
        }
    }
}

extension StringProtocol {
    var trimmingSuffixNewline: String { hasSuffix("\n") ? String(dropLast()) : String(self) }
}

/// What the applier reads: every IPVS virtual server (with real servers and their connection
/// counters) and the dummy interface with its addresses.
public struct IpvsKernelState: Sendable {
    public var services: [IpvsVirtualServer]
    public var interfaceExists: Bool
    public var addresses: [IPAddress]

    public init(services: [IpvsVirtualServer] = [], interfaceExists: Bool = false, addresses: [IPAddress] = []) {
        self.services = services; self.interfaceExists = interfaceExists; self.addresses = addresses
    }
}

public enum IpvsKernelError: Error, Sendable, CustomStringConvertible {
    /// The generic netlink family "IPVS" does not exist (no ip_vs module).
    case unavailable
    /// The kernel refused one request.
    case refused(object: String, errno: Int32, message: String)
    /// A socket operation or dump failed.
    case io(operation: String, errno: Int32, message: String)
    /// A dumped object could not be decoded.
    case decode(object: String, reason: String)

    public var description: String {
        switch self {
        case .unavailable: return "IPVS is not available in this kernel (generic netlink family \"IPVS\" not found; is the ip_vs module loaded?)"
        case .refused(let o, let e, let m): return "\(o): \(m) (errno \(e))"
        case .io(let op, let e, let m): return "\(op) failed: \(m) (errno \(e))"
        case .decode(let o, let r): return "cannot decode \(o): \(r)"
        }
    }
}

/// The kernel as the IPVS applier sees it. Two implementations: `IpvsNetlink` (generic netlink
/// + rtnetlink over libmnl, target Netlink) and `FakeIpvsKernel` (in memory).
public protocol IpvsKernel: AnyObject {
    /// Every virtual server of the IPVS table, and the dummy interface `interface`.
    func read(interface: String) throws -> IpvsKernelState
    /// One request; throws `IpvsKernelError.refused` naming the object.
    func perform(_ change: IpvsChange) throws
}

extension IpvsText {
    /// `-t 10.0.0.1:80` (ipvsadm's service selector).
    public static func serviceArgs(_ k: IpvsServiceKey) -> String {
        let flag: String
        switch k.proto { case .tcp: flag = "-t"; case .udp: flag = "-u"; case .sctp: flag = "--sctp-service" }
        return "\(flag) \(k.hostPort)"
    }
}
