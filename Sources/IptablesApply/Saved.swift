/// What `iptables-save -t TABLE` printed, parsed: chains with their policies and rules.
public struct SavedTable: Sendable, Equatable {
    public var name: String
    /// Every chain in the order iptables-save listed it.
    public var chains: [String] = []
    /// Rules per chain, each a full `-A CHAIN …` line as printed.
    public var rules: [String: [String]] = [:]

    public init(name: String) { self.name = name }

    /// Parses iptables-save output; only the section `*name` is kept (comments and counters ignored).
    public static func parse(_ text: String, table name: String) -> SavedTable {
        var t = SavedTable(name: name)
        var inTable = false
        let wanted = Array(name.utf8)
        // Byte-level scan: iptables-save output is ASCII and can be 40 MB at 10,000 services.
        for line in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            guard let first = line.first else { continue }
            switch first {
            case UInt8(ascii: "*"):
                inTable = line.dropFirst().elementsEqual(wanted)
            case UInt8(ascii: ":") where inTable:
                let chain = String(decoding: line.dropFirst().prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
                if t.rules[chain] == nil { t.chains.append(chain); t.rules[chain] = [] }
            case UInt8(ascii: "-") where inTable && line.starts(with: "-A ".utf8):
                let chain = String(decoding: line.dropFirst(3).prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
                if t.rules[chain] == nil { t.chains.append(chain); t.rules[chain] = [] }
                t.rules[chain]!.append(String(decoding: line, as: UTF8.self))
            default:
                continue  // comments, COMMIT, other tables
            }
        }
        return t
    }
}

/// The chains kuberules owns: exactly the chains kube-proxy's iptables and IPVS modes write
/// (fixed names plus the hashed per-service and per-endpoint chains). Chains of anyone else,
/// including kubelet's KUBE-KUBELET-CANARY, are never written, flushed or deleted.
public enum Ownership {
    public static let fixedChains: Set<String> = [
        "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
        "KUBE-FORWARD", "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL", "KUBE-PROXY-CANARY",
        // IPVS mode's chains (switching modes removes the other mode's chains, as kube-proxy does).
        "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER",
    ]
    public static let hashedPrefixes = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"]

    public static func isOurs(_ chain: String) -> Bool {
        if fixedChains.contains(chain) { return true }
        return hashedPrefixes.contains { chain.hasPrefix($0) }
    }

    public static let builtinChains: Set<String> = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
}
