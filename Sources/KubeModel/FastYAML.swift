import CYaml

/// Builds KNode trees straight from libyaml's event stream (libyaml ships inside Yams), without
/// Yams' intermediate node tree: about 10× faster on large manifests. Anything unusual (a syntax
/// error, an alias, an explicit tag, a non-scalar key, very deep nesting) returns nil, and the
/// caller takes the Yams path, which reports errors with their line and column.
enum FastYAML {
    /// An open collection: maps and lists live in their own stacks and are mutated in place
    /// (popping an enum payload and re-pushing it would copy the array on every append).
    private struct Frame {
        var isMap: Bool
        var key: String?
        var line: Int
    }

    static func parse(_ text: String) -> [KNode]? {
        var text = text
        return text.withUTF8 { buf -> [KNode]? in
            var parser = yaml_parser_t()
            guard yaml_parser_initialize(&parser) == 1 else { return nil }
            defer { yaml_parser_delete(&parser) }
            yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
            yaml_parser_set_input_string(&parser, buf.baseAddress, buf.count)
            var docs = [KNode]()
            var stack = [Frame]()
            var maps = [KMap]()
            var lists = [[KNode]]()
            var root: KNode?
            var event = yaml_event_t()

            // Adds a finished value to the enclosing collection; false when not representable.
            func add(_ node: KNode) -> Bool {
                guard let top = stack.last else { root = node; return true }
                if top.isMap {
                    // A non-scalar or duplicated key: let the Yams path report it.
                    guard let key = top.key, maps[maps.count - 1].insert(key, node) else { return false }
                    stack[stack.count - 1].key = nil
                } else {
                    lists[lists.count - 1].append(node)
                }
                return true
            }

            while true {
                guard yaml_parser_parse(&parser, &event) == 1 else { return nil }
                defer { yaml_event_delete(&event) }
                let line = Int(event.start_mark.line) + 1
                switch event.type {
                case YAML_STREAM_START_EVENT, YAML_DOCUMENT_START_EVENT:
                    continue
                case YAML_DOCUMENT_END_EVENT:
                    docs.append(root ?? KNode(.null, line: line))
                    root = nil
                case YAML_STREAM_END_EVENT:
                    return docs
                case YAML_ALIAS_EVENT:
                    return nil
                case YAML_SCALAR_EVENT:
                    let s = event.data.scalar
                    if s.tag != nil && s.plain_implicit == 0 && s.quoted_implicit == 0 { return nil }
                    let value = String(decoding: UnsafeBufferPointer(start: s.value, count: s.length), as: UTF8.self)
                    if let top = stack.last, top.isMap, top.key == nil {
                        stack[stack.count - 1].key = value
                        continue
                    }
                    let plain = s.style == YAML_PLAIN_SCALAR_STYLE || s.style == YAML_ANY_SCALAR_STYLE
                    guard add(KNode(plain ? YamlConversion.resolvePlain(value) : .string(value), line: line)) else { return nil }
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    let isMap = event.type == YAML_MAPPING_START_EVENT
                    let explicitTag = isMap
                        ? event.data.mapping_start.implicit == 0 && event.data.mapping_start.tag != nil
                        : event.data.sequence_start.implicit == 0 && event.data.sequence_start.tag != nil
                    if explicitTag || stack.count > 200 { return nil }
                    if let top = stack.last, top.isMap, top.key == nil { return nil }  // a collection as a key
                    stack.append(Frame(isMap: isMap, key: nil, line: line))
                    if isMap { maps.append(KMap()) } else { lists.append([]) }
                case YAML_SEQUENCE_END_EVENT:
                    guard let top = stack.popLast(), !top.isMap, let l = lists.popLast() else { return nil }
                    guard add(KNode(.list(l), line: top.line)) else { return nil }
                case YAML_MAPPING_END_EVENT:
                    guard let top = stack.popLast(), top.isMap, top.key == nil, let d = maps.popLast() else { return nil }
                    guard add(KNode(.map(d), line: top.line)) else { return nil }
                default:
                    return nil
                }
            }
        }
    }
}
