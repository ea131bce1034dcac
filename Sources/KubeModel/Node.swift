import Yams

/// A parsed manifest value, independent of YAML or JSON, with the line it started on.
public struct KNode: Sendable, Equatable {
    public enum Value: Sendable, Equatable {
        case map(KMap)
        case list([KNode])
        case string(String)
        case int(Int)
        case float(Double)
        case bool(Bool)
        case null
    }
    public var value: Value
    public var line: Int

    public init(_ value: Value, line: Int = 0) { self.value = value; self.line = line }

    public subscript(key: String) -> KNode? {
        if case .map(let m) = value { return m[key] }
        return nil
    }

    /// A short description of the value for error messages.
    public var shortDescription: String {
        switch value {
        case .map: return "an object"
        case .list: return "a list"
        case .string(let s):
            let cut = s.count > 40 ? String(s.prefix(40)) + "…" : s
            return "string \"\(cut)\""
        case .int(let i): return "integer \(i)"
        case .float(let d): return "number \(d)"
        case .bool(let b): return "boolean \(b)"
        case .null: return "null"
        }
    }
}

/// The fields of a manifest object, in document order. Objects in manifests are small and the
/// decoder asks each for a few known keys, so a linear search beats hashing every key of every
/// object (a hash table per object was a third of loading 10,000 services). Objects with many
/// fields (large label maps) get a name index once they pass `indexThreshold` fields.
public struct KMap: Sendable, Equatable, Sequence {
    public typealias Element = (key: String, value: KNode)
    /// A field. (A struct, not a tuple: an array of tuples is copied and destroyed through the
    /// runtime's generic tuple witnesses, a tenth of loading 10,000 services.)
    public struct Field: Sendable {
        public var key: String
        public var value: KNode
    }
    private var fields: [Field] = []
    private var index: [String: Int]?
    static let indexThreshold = 16

    public init() {}
    public init(minimumCapacity: Int) { fields.reserveCapacity(minimumCapacity) }
    public init(_ pairs: [(String, KNode)]) {
        for (k, v) in pairs { set(k, v) }
    }

    /// The fields as given, in one allocation; nil when a key appears twice.
    init?(uniqueFields: ArraySlice<Field>) {
        fields = Array(uniqueFields)
        if fields.count > Self.indexThreshold {
            var ix = [String: Int](minimumCapacity: fields.count)
            for (i, e) in fields.enumerated() {
                guard ix.updateValue(i, forKey: e.key) == nil else { return nil }
            }
            index = ix
        } else {
            for i in fields.indices {
                for j in fields.indices where j < i && fields[j].key == fields[i].key { return nil }
            }
        }
    }

    public var count: Int { fields.count }
    public var isEmpty: Bool { fields.isEmpty }
    public var keys: [String] { fields.map(\.key) }

    private func position(of key: String) -> Int? {
        if let index { return index[key] }
        for i in fields.indices where fields[i].key == key { return i }
        return nil
    }

    public subscript(key: String) -> KNode? {
        guard let i = position(of: key) else { return nil }
        return fields[i].value
    }

    /// Adds a field; false (and no change) when the key is already present.
    @discardableResult
    public mutating func insert(_ key: String, _ value: KNode) -> Bool {
        if position(of: key) != nil { return false }
        append(key, value)
        return true
    }

    /// Sets a field, replacing an earlier value of the same key in place.
    public mutating func set(_ key: String, _ value: KNode) {
        if let i = position(of: key) { fields[i].value = value } else { append(key, value) }
    }

    private mutating func append(_ key: String, _ value: KNode) {
        if index != nil {
            index![key] = fields.count
        } else if fields.count == Self.indexThreshold {
            var ix = [String: Int](minimumCapacity: fields.count * 2)
            for (i, e) in fields.enumerated() { ix[e.key] = i }
            ix[key] = fields.count
            index = ix
        }
        fields.append(Field(key: key, value: value))
    }

    public struct Iterator: IteratorProtocol {
        var base: IndexingIterator<[Field]>
        public mutating func next() -> Element? { base.next().map { ($0.key, $0.value) } }
    }

    public func makeIterator() -> Iterator { Iterator(base: fields.makeIterator()) }

    /// Equal when they hold the same keys with equal values, in any order (as for a dictionary).
    public static func == (a: KMap, b: KMap) -> Bool {
        guard a.count == b.count else { return false }
        for f in a.fields {
            guard let w = b[f.key], w == f.value else { return false }
        }
        return true
    }
}

/// Converts Yams nodes into KNode trees, resolving plain scalars the way YAML 1.1 does.
enum YamlConversion {
    static func convert(_ node: Node, depth: Int = 0) throws -> KNode {
        if depth > 200 { throw ConversionError.tooDeep }
        let line = node.mark?.line ?? 0
        switch node {
        case .scalar(let s):
            return KNode(scalarValue(s), line: line)
        case .mapping(let m):
            var dict = KMap(minimumCapacity: m.count)
            for (k, v) in m {
                let key: String
                switch k {
                case .scalar(let ks): key = ks.string
                default: throw ConversionError.nonScalarKey(line: k.mark?.line ?? line)
                }
                dict.set(key, try convert(v, depth: depth + 1))
            }
            return KNode(.map(dict), line: line)
        case .sequence(let seq):
            var out = [KNode]()
            out.reserveCapacity(seq.count)
            for item in seq { out.append(try convert(item, depth: depth + 1)) }
            return KNode(.list(out), line: line)
        case .alias:
            throw ConversionError.alias(line: line)
        }
    }

    /// Plain scalars are resolved here (YAML 1.2 core schema: null, bool, int, float), which is far
    /// faster than Yams' regular-expression resolver; quoted and block scalars are strings.
    static func scalarValue(_ s: Node.Scalar) -> KNode.Value {
        switch s.style {
        case .singleQuoted, .doubleQuoted, .literal, .folded:
            return .string(s.string)
        default: break
        }
        if s.tag.rawValue != Tag.Name.str.rawValue && !s.tag.rawValue.isEmpty {
            // An explicit tag (!!int, !!str, …): honour the common ones.
            switch s.tag.rawValue {
            case Tag.Name.int.rawValue: if let i = Int(s.string) { return .int(i) }
            case Tag.Name.bool.rawValue: if let b = resolveBool(s.string) { return .bool(b) }
            case Tag.Name.float.rawValue: if let d = Double(s.string) { return .float(d) }
            case Tag.Name.null.rawValue: return .null
            default: break
            }
            return .string(s.string)
        }
        return resolvePlain(s.string)
    }

    static func resolveBool(_ t: String) -> Bool? {
        switch t {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: return nil
        }
    }

    static func resolvePlain(_ t: String) -> KNode.Value {
        guard let first = t.utf8.first else { return .null }
        switch first {
        case UInt8(ascii: "~"): return t == "~" ? .null : .string(t)
        case UInt8(ascii: "n"), UInt8(ascii: "N"):
            return (t == "null" || t == "Null" || t == "NULL") ? .null : .string(t)
        case UInt8(ascii: "t"), UInt8(ascii: "T"), UInt8(ascii: "f"), UInt8(ascii: "F"):
            if let b = resolveBool(t) { return .bool(b) }
            return .string(t)
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."):
            var digitsOnly = true, sawDigit = false
            for (i, c) in t.utf8.enumerated() {
                if c >= 48 && c <= 57 { sawDigit = true; continue }
                if i == 0 && (c == 45 || c == 43) { continue }
                digitsOnly = false
                break
            }
            if digitsOnly && sawDigit {
                if let i = Int(t) { return .int(i) }
                return .float(Double(t) ?? .infinity)  // too large for an integer
            }
            if t.hasPrefix("0x"), let i = Int(t.dropFirst(2), radix: 16) { return .int(i) }
            if t.hasPrefix("0o"), let i = Int(t.dropFirst(2), radix: 8) { return .int(i) }
            if sawDigit, t.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == 46 || $0 == 101 || $0 == 69 || $0 == 45 || $0 == 43 }),
               let d = Double(t) { return .float(d) }
            switch t {
            case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": return .float(.infinity)
            case "-.inf", "-.Inf", "-.INF": return .float(-.infinity)
            case ".nan", ".NaN", ".NAN": return .float(.nan)
            default: return .string(t)
            }
        default:
            return .string(t)
        }
    }

    enum ConversionError: Error {
        case tooDeep
        case nonScalarKey(line: Int)
        case alias(line: Int)
    }
}
