import Yams

/// A parsed manifest value, independent of YAML or JSON, with the line it started on.
public struct KNode: Sendable {
    public indirect enum Value: Sendable {
        case map([String: KNode])
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

/// Converts Yams nodes into KNode trees, resolving plain scalars the way YAML 1.1 does.
enum YamlConversion {
    static func convert(_ node: Node, depth: Int = 0) throws -> KNode {
        if depth > 200 { throw ConversionError.tooDeep }
        let line = node.mark?.line ?? 0
        switch node {
        case .scalar(let s):
            return KNode(scalarValue(s), line: line)
        case .mapping(let m):
            var dict = [String: KNode](minimumCapacity: m.count)
            for (k, v) in m {
                let key: String
                switch k {
                case .scalar(let ks): key = ks.string
                default: throw ConversionError.nonScalarKey(line: k.mark?.line ?? line)
                }
                dict[key] = try convert(v, depth: depth + 1)
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

    static func scalarValue(_ s: Node.Scalar) -> KNode.Value {
        switch s.style {
        case .singleQuoted, .doubleQuoted, .literal, .folded:
            return .string(s.string)
        default: break
        }
        switch Tag.Name(rawValue: Node.scalar(s).tag.rawValue) {
        case .null: return .null
        case .bool:
            if let b = Bool.construct(from: s) { return .bool(b) }
            return .string(s.string)
        case .int:
            if let i = Int.construct(from: s) { return .int(i) }
            return .string(s.string)
        case .float:
            if let d = Double.construct(from: s) { return .float(d) }
            return .string(s.string)
        default:
            return .string(s.string)
        }
    }

    enum ConversionError: Error {
        case tooDeep
        case nonScalarKey(line: Int)
        case alias(line: Int)
    }
}
