import KubeModel
import Parallel

/// IPVS service flags (linux/ip_vs.h).
public enum IpvsFlags {
    /// IP_VS_SVC_F_PERSISTENT: ClientIP session affinity.
    public static let persistent: UInt32 = 0x0001
    /// IP_VS_SVC_F_HASHED: set by the kernel on every listed service; never sent, ignored when comparing.
    public static let hashed: UInt32 = 0x0002
    /// IP_VS_SVC_F_SCHED2: kube-proxy's "source hash" flag for `mh` (ipvsadm calls it `mh-port`).
    public static let sched2: UInt32 = 0x0010
}

/// What identifies a virtual server: protocol, address, port.
public struct IpvsServiceKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var proto: L4Protocol
    public var address: IPAddress
    public var port: Int

    public init(proto: L4Protocol, address: IPAddress, port: Int) {
        self.proto = proto; self.address = address; self.port = port
    }

    public var family: IPFamily { address.family }
    /// `10.0.0.1:80` or `[fd00::1]:80`.
    public var hostPort: String { IpvsText.hostPort(address, port) }
    /// `TCP 10.0.0.1:80`.
    public var description: String { "\(proto.rawValue) \(hostPort)" }

    public static func < (a: IpvsServiceKey, b: IpvsServiceKey) -> Bool {
        if a.address != b.address { return a.address < b.address }
        if a.proto != b.proto { return a.proto < b.proto }
        return a.port < b.port
    }
}

/// One real server (destination) of a virtual server. kube-proxy: weight 1, masquerade.
public struct IpvsRealServer: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var address: IPAddress
    public var port: Int
    public var weight: Int
    /// Forwarding method (IP_VS_CONN_F_FWD_MASK bits): 0 = masquerade.
    public var forwardMethod: UInt32
    /// Connection counters, as read from the kernel (0 in desired state; not compared).
    public var activeConnections: Int
    public var inactiveConnections: Int

    public init(address: IPAddress, port: Int, weight: Int = 1, forwardMethod: UInt32 = 0,
                activeConnections: Int = 0, inactiveConnections: Int = 0) {
        self.address = address; self.port = port; self.weight = weight; self.forwardMethod = forwardMethod
        self.activeConnections = activeConnections; self.inactiveConnections = inactiveConnections
    }

    public var hostPort: String { IpvsText.hostPort(address, port) }
    public var description: String { hostPort }
    /// Same real server (address and port), whatever its settings.
    public func sameEndpoint(_ o: IpvsRealServer) -> Bool { address == o.address && port == o.port }
    /// Same settings as far as we program them (weight, forwarding method).
    public func sameSettings(_ o: IpvsRealServer) -> Bool { weight == o.weight && forwardMethod == o.forwardMethod }

    public static func < (a: IpvsRealServer, b: IpvsRealServer) -> Bool {
        a.address != b.address ? a.address < b.address : a.port < b.port
    }
}

/// One virtual server with its real servers.
public struct IpvsVirtualServer: Sendable, Hashable, CustomStringConvertible {
    public var key: IpvsServiceKey
    public var scheduler: String
    /// Service flags without IP_VS_SVC_F_HASHED.
    public var flags: UInt32
    /// Persistence timeout in seconds (0 when not persistent).
    public var timeout: UInt32
    /// Persistence netmask: 0xffffffff for IPv4, the prefix length 128 for IPv6 (host order, as the kernel wants).
    public var netmask: UInt32
    /// Real servers, sorted.
    public var destinations: [IpvsRealServer]
    /// The service port name(s) it was built for (rendering only; IPVS stores no comment).
    public var comment: String

    public init(key: IpvsServiceKey, scheduler: String, flags: UInt32 = 0, timeout: UInt32 = 0,
                netmask: UInt32? = nil, destinations: [IpvsRealServer] = [], comment: String = "") {
        self.key = key; self.scheduler = scheduler; self.flags = flags & ~IpvsFlags.hashed; self.timeout = timeout
        self.netmask = netmask ?? (key.family == .ipv4 ? 0xffff_ffff : 128)
        self.destinations = destinations.sorted(); self.comment = comment
    }

    public var isPersistent: Bool { flags & IpvsFlags.persistent != 0 }

    /// Same service settings (scheduler, flags, timeout, netmask); real servers not compared.
    public func sameSettings(_ o: IpvsVirtualServer) -> Bool {
        scheduler == o.scheduler && (flags & ~IpvsFlags.hashed) == (o.flags & ~IpvsFlags.hashed)
            && timeout == o.timeout && netmask == o.netmask
    }

    public var description: String { key.description }
}

/// ipset set types used by kube-proxy's IPVS mode.
public enum IpsetType: String, Sendable, Hashable {
    case hashIP = "hash:ip"
    case hashIPPort = "hash:ip,port"
    case hashIPPortIP = "hash:ip,port,ip"
    case hashIPPortNet = "hash:ip,port,net"
    case bitmapPort = "bitmap:port"

    public var isHash: Bool { self != .bitmapPort }
}

/// One ipset: definition and entries (in `ipset` entry syntax, sorted).
public struct Ipset: Sendable, Hashable {
    public var name: String
    public var type: IpsetType
    public var family: IPFamily
    public var comment: String
    public var entries: [String]

    public init(name: String, type: IpsetType, family: IPFamily, comment: String, entries: [String] = []) {
        self.name = name; self.type = type; self.family = family; self.comment = comment; self.entries = entries
    }

    /// `create NAME TYPE family inet hashsize 1024 maxelem 65536 -exist`, as kube-proxy creates it.
    public var createLine: String {
        var s = "create \(name) \(type.rawValue)"
        if type.isHash {
            s += " family \(family == .ipv4 ? "inet" : "inet6") hashsize 1024 maxelem 65536"
        } else {
            s += " range 0-65535"
        }
        return s + " -exist"
    }
}

public enum IpvsText {
    public static func hostPort(_ ip: IPAddress, _ port: Int) -> String {
        ip.family == .ipv4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }

    static func protoFlag(_ p: L4Protocol) -> String {
        switch p { case .tcp: "-t"; case .udp: "-u"; case .sctp: "--sctp-service" }
    }

    /// ipvsadm's name for the scheduler flags we may set.
    static func schedFlags(_ s: IpvsVirtualServer) -> String? {
        guard s.flags & IpvsFlags.sched2 != 0 else { return nil }
        switch s.scheduler {
        case "sh": return "sh-port"
        case "mh": return "mh-port"
        default: return "flag-2"
        }
    }

    /// `ipvsadm -R` input: `-A` per virtual server, then its `-a` lines; services sorted by key.
    /// Written in parallel runs of services, joined in order.
    public static func ipvsadm(_ services: [IpvsVirtualServer]) -> String {
        let sorted = services.sorted(by: { $0.key < $1.key })
        return Parallel.mapRuns(count: sorted.count, minimumCount: 2048) { range in
            var out = ""
            for s in sorted[range] {
                let svc = "\(protoFlag(s.key.proto)) \(s.key.hostPort)"
                out += "-A \(svc) -s \(s.scheduler)"
                if s.isPersistent { out += " -p \(s.timeout)" }
                if let f = schedFlags(s) { out += " -b \(f)" }
                out += "\n"
                for d in s.destinations {
                    out += "-a \(svc) -r \(d.hostPort) \(d.forwardMethod == 0 ? "-m" : "-g") -w \(d.weight)\n"
                }
            }
            return out
        }.joined()
    }

    /// `ipset restore` input: every set created (`-exist`), then its entries added (`-exist`).
    public static func ipsetRestore(_ sets: [Ipset]) -> String {
        var out = ""
        for s in sets { out += "# \(s.name): \(s.comment)\n"; out += s.createLine + "\n" }
        for s in sets {
            out += Parallel.mapRuns(count: s.entries.count, minimumCount: 2048) { range in
                var text = ""
                for e in s.entries[range] { text += "add \(s.name) \(e) -exist\n" }
                return text
            }.joined()
        }
        return out
    }
}
