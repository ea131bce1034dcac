#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// EndpointSlices read straight from JSON text into their value, without a tree.
///
/// EndpointSlices are most of a cluster's bytes (83 % at 10,000 services), and building the tree
/// of each, then freeing it, was most of loading them. This path reads only the common, valid
/// shape: anything else — another kind, a value of an unexpected type, a null where a value
/// would be checked, a label kube-proxy skips on, an invalid name, port or address, a
/// duplicated key — and it gives up on the item, which is then parsed into a tree and decoded
/// by `Decoders.endpointSlice` as before, with the same diagnostics. What it returns is what
/// that decoder returns for the same text, without problems (tested on every fixture and on
/// generated clusters).
extension FastJSON.Parser {
    /// The EndpointSlice at `pos`, or nil with `pos` and `line` where they were.
    mutating func endpointSlice(depth: Int, file: String) -> EndpointSlice? {
        let saved = (pos, line)
        if let s = readSlice(depth: depth, file: file) { return s }
        (pos, line) = saved
        return nil
    }

    enum FieldResult { case read, skip, fail }

    /// A key as its bytes (nil when it has an escape, a control character or a byte that is not
    /// ASCII: the reader gives up. Two keys that differ only in Unicode normalization are one
    /// key to the tree path, which then refuses the object; bytes alone cannot tell.)
    struct Key {
        let bytes: UnsafeBufferPointer<UInt8>
        static func == (k: Key, s: StaticString) -> Bool {
            k.bytes.count == s.utf8CodeUnitCount && (k.bytes.count == 0 || memcmp(k.bytes.baseAddress!, s.utf8Start, k.bytes.count) == 0)
        }
        var string: String { String(decoding: bytes, as: UTF8.self) }
    }

    private mutating func key() -> Key? {
        guard pos < end, bytes[pos] == UInt8(ascii: "\"") else { return nil }
        let begin = pos + 1
        var i = begin
        while i < end {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                pos = i + 1
                return Key(bytes: UnsafeBufferPointer(rebasing: bytes[begin..<i]))
            }
            if c == UInt8(ascii: "\\") || c < 0x20 || c >= 0x80 { return nil }
            i += 1
        }
        return nil
    }

    /// Reads the object at `pos`: `field` reads the value of each key it knows (`.read`), or
    /// asks for it to be skipped (parsed, and checked for syntax, then dropped). False on a
    /// syntax problem, a key given twice, more than 32 keys, or `.fail`.
    private mutating func object(depth: Int, _ field: (inout Self, Key) -> FieldResult) -> Bool {
        guard depth <= 200, pos < end, bytes[pos] == UInt8(ascii: "{") else { return false }
        pos += 1
        skipSpace()
        if pos < end && bytes[pos] == UInt8(ascii: "}") { pos += 1; return true }
        // The keys so far, to refuse one given twice, without an allocation per object.
        return withUnsafeTemporaryAllocation(of: Key.self, capacity: 32) { keys -> Bool in
            var n = 0
            while true {
                skipSpace()
                guard let key = key(), n < keys.count else { return false }
                for j in 0..<n where keys[j].bytes.count == key.bytes.count
                    && memcmp(keys[j].bytes.baseAddress!, key.bytes.baseAddress!, key.bytes.count) == 0 { return false }
                keys[n] = key
                n += 1
                skipSpace()
                guard pos < end, bytes[pos] == UInt8(ascii: ":") else { return false }
                pos += 1
                skipSpace()
                switch field(&self, key) {
                case .read: break
                case .skip: guard value(depth: depth + 1) != nil else { return false }
                case .fail: return false
                }
                skipSpace()
                guard pos < end else { return false }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "}") { pos += 1; return true }
                return false
            }
        }
    }

    /// Reads the list at `pos` (`null`: no items), each item through `item`.
    private mutating func list(depth: Int, _ item: (inout Self) -> Bool) -> Bool {
        if scalarIsNull() { return true }
        guard depth <= 200, pos < end, bytes[pos] == UInt8(ascii: "[") else { return false }
        pos += 1
        skipSpace()
        if pos < end && bytes[pos] == UInt8(ascii: "]") { pos += 1; return true }
        while true {
            skipSpace()
            guard item(&self) else { return false }
            skipSpace()
            guard pos < end else { return false }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return true }
            return false
        }
    }

    /// The scalar token at `pos` when it is one `FastJSON.simpleScalar` reads (pos after it).
    private mutating func scalar() -> KNode.Value? {
        let begin = pos, i = tokenEnd(from: pos)
        guard i > begin, let v = FastJSON.simpleScalar(UnsafeBufferPointer(rebasing: bytes[begin..<i])) else { return nil }
        pos = i
        return v
    }

    /// Whether a `null` is at `pos` (read when it is).
    private mutating func scalarIsNull() -> Bool {
        guard pos < end, bytes[pos] == UInt8(ascii: "n") else { return false }
        let saved = pos
        if case .null? = scalar() { return true }
        pos = saved
        return false
    }

    /// A string, or `null` (`.some(nil)`); nil for anything else.
    private mutating func optionalString() -> String?? {
        if scalarIsNull() { return .some(nil) }
        guard pos < end, bytes[pos] == UInt8(ascii: "\""), let s = string() else { return nil }
        return .some(s)
    }

    private mutating func optionalBool() -> Bool?? {
        switch scalar() {
        case .bool(let b)?: return .some(b)
        case .null?: return .some(nil)
        default: return nil
        }
    }

    private mutating func optionalInt() -> Int?? {
        switch scalar() {
        case .int(let i)?: return .some(i)
        case .null?: return .some(nil)
        default: return nil
        }
    }

    private mutating func readSlice(depth: Int, file: String) -> EndpointSlice? {
        var apiVersion = "", kind = "", name = "", namespace = "", serviceName = "", addressType = ""
        var ports = [EndpointPort](), endpoints = [Endpoint]()
        // The families of every endpoint address, checked against addressType (which may come last).
        var families: (v4: Bool, v6: Bool) = (false, false)
        let ok = object(depth: depth) { p, key in
            if key == "apiVersion" {
                guard case let s?? = p.optionalString() else { return .fail }
                apiVersion = s
            } else if key == "kind" {
                guard case let s?? = p.optionalString() else { return .fail }
                kind = s
            } else if key == "addressType" {
                guard case let s?? = p.optionalString() else { return .fail }
                addressType = s
            } else if key == "metadata" {
                guard p.metadata(depth: depth + 1, name: &name, namespace: &namespace, serviceName: &serviceName) else { return .fail }
            } else if key == "ports" {
                guard p.list(depth: depth + 1, { p in
                    guard let port = p.port(depth: depth + 2), !ports.contains(where: { $0.name == port.name }) else { return false }
                    ports.append(port)
                    return true
                }) else { return .fail }
            } else if key == "endpoints" {
                guard p.list(depth: depth + 1, { p in
                    guard let e = p.endpoint(depth: depth + 2, families: &families) else { return false }
                    endpoints.append(e)
                    return true
                }) else { return .fail }
            } else {
                return .skip
            }
            return .read
        }
        let family: IPFamily
        switch addressType {
        case "IPv4": family = .ipv4
        case "IPv6": family = .ipv6
        default: return nil
        }
        guard ok, kind == "EndpointSlice", apiVersion == "discovery.k8s.io/v1", !name.isEmpty,
              families == (false, false) || families == (family == .ipv4 ? (true, false) : (false, true)) else { return nil }
        if namespace.isEmpty { namespace = "default" }
        guard Names.isDNSLabel(namespace) else { return nil }
        var slice = EndpointSlice(ref: ObjectRef(kind: "EndpointSlice", namespace: namespace, name: name, file: file),
                                  serviceName: serviceName, family: family)
        slice.ports = ports
        slice.endpoints = endpoints
        return slice
    }

    /// metadata: name, namespace and the service-name label; any label kube-proxy skips an
    /// object for, or a label value that is not a string, gives up.
    private mutating func metadata(depth: Int, name: inout String, namespace: inout String, serviceName: inout String) -> Bool {
        object(depth: depth) { p, key in
            if key == "name" {
                guard case let s?? = p.optionalString() else { return .fail }
                name = s
            } else if key == "namespace" {
                guard case let s? = p.optionalString() else { return .fail }
                namespace = s ?? ""
            } else if key == "labels" {
                guard p.object(depth: depth + 1, { p, label in
                    guard case let v?? = p.optionalString(), !ManifestLoader.ignoredLabels.contains(label.string) else { return .fail }
                    if label == "kubernetes.io/service-name" { serviceName = v }
                    return .read
                }) else { return .fail }
            } else {
                return .skip
            }
            return .read
        }
    }

    private mutating func port(depth: Int) -> EndpointPort? {
        var name = "", proto = L4Protocol.tcp, number: Int?
        guard object(depth: depth, { p, key in
            if key == "name" {
                guard case let s? = p.optionalString() else { return .fail }
                name = s ?? ""
                if !name.isEmpty && !Names.isDNSLabel(name) { return .fail }
            } else if key == "protocol" {
                guard case let s? = p.optionalString() else { return .fail }
                if let s, !s.isEmpty {
                    guard let known = L4Protocol(rawValue: s) else { return .fail }
                    proto = known
                }
            } else if key == "port" {
                guard case let n? = p.optionalInt() else { return .fail }
                if let n, !(1...65535).contains(n) { return .fail }
                number = n
            } else {
                return .skip
            }
            return .read
        }) else { return nil }
        return EndpointPort(name: name, port: number, proto: proto)
    }

    private mutating func endpoint(depth: Int, families: inout (v4: Bool, v6: Bool)) -> Endpoint? {
        var first: IPAddress?, count = 0
        var ready: Bool?, serving: Bool?, terminating: Bool?
        var nodeName: String?, zone: String?
        var zoneHints = [String](), nodeHints = [String]()
        guard object(depth: depth, { p, key in
            if key == "addresses" {
                guard p.list(depth: depth + 1, { p in
                    guard let ip = p.address() else { return false }
                    if ip.family == .ipv4 { families.v4 = true } else { families.v6 = true }
                    if first == nil { first = ip }
                    count += 1
                    return true
                }) else { return .fail }
            } else if key == "conditions" {
                if p.scalarIsNull() { return .read }
                guard p.object(depth: depth + 1, { p, key in
                    if key == "ready" {
                        guard case let b? = p.optionalBool() else { return .fail }
                        ready = b
                    } else if key == "serving" {
                        guard case let b? = p.optionalBool() else { return .fail }
                        serving = b
                    } else if key == "terminating" {
                        guard case let b? = p.optionalBool() else { return .fail }
                        terminating = b
                    } else {
                        return .skip
                    }
                    return .read
                }) else { return .fail }
            } else if key == "nodeName" {
                guard case let s? = p.optionalString() else { return .fail }
                nodeName = s
            } else if key == "zone" {
                guard case let s? = p.optionalString() else { return .fail }
                zone = s
            } else if key == "hints" {
                if p.scalarIsNull() { return .read }
                guard p.object(depth: depth + 1, { p, key in
                    if key == "forZones" { return p.hintNames(depth: depth + 2, into: &zoneHints) ? .read : .fail }
                    if key == "forNodes" { return p.hintNames(depth: depth + 2, into: &nodeHints) ? .read : .fail }
                    return .skip
                }) else { return .fail }
            } else {
                return .skip
            }
            return .read
        }), let first, (1...100).contains(count) else { return nil }
        if nodeName?.isEmpty == true { nodeName = nil }
        return Endpoint(address: first, ready: ready ?? true, serving: serving, terminating: terminating ?? false,
                        nodeName: nodeName, zone: zone, zoneHints: zoneHints, nodeHints: nodeHints)
    }

    /// An address string: IPv4 read from its bytes, anything else through `IPAddress(String)`.
    private mutating func address() -> IPAddress? {
        guard let raw = key() else {
            guard case let s?? = optionalString() else { return nil }
            return IPAddress(s)
        }
        return raw.bytes.contains(UInt8(ascii: ":")) ? IPAddress(raw.string) : IPAddress.parseIPv4(raw.bytes)
    }

    /// `[{"name": …}, …]` of topology hints.
    private mutating func hintNames(depth: Int, into names: inout [String]) -> Bool {
        list(depth: depth) { p in
            p.object(depth: depth + 1) { p, key in
                guard key == "name" else { return .skip }
                guard case let s? = p.optionalString() else { return .fail }
                if let s { names.append(s) }
                return .read
            }
        }
    }
}
