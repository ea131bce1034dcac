import Foundation
import Parallel
import Yams

/// Loads Kubernetes manifests (YAML, multi-document, JSON, `kind: List`) from files,
/// directories and stdin, validating every object.
public struct ManifestLoader {
    public var skipInvalid: Bool
    /// Problems that did not stop loading: skipped invalid objects (with --skip-invalid),
    /// unknown kinds, slices without a service label.
    public private(set) var warnings: [Diagnostic] = []
    private var errors: [Diagnostic] = []
    private var cluster = Cluster()

    public init(skipInvalid: Bool = false) { self.skipInvalid = skipInvalid }

    /// Loads all inputs. Throws `InputError` with every problem when anything is invalid
    /// (unless `skipInvalid`, in which case invalid objects are left out with a warning).
    public mutating func load(paths: [String], stdin: () -> Data = { FileHandle.standardInput.readDataToEndOfFile() }) throws -> Cluster {
        for path in paths {
            if path == "-" {
                loadText(stdin(), file: "<stdin>")
                continue
            }
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                errors.append(Diagnostic(file: path, message: "no such file or directory"))
                continue
            }
            if isDir.boolValue {
                for file in Self.manifestFiles(in: path) { loadFile(file) }
            } else {
                loadFile(path)
            }
        }
        if !errors.isEmpty { throw InputError(errors) }
        return cluster
    }

    /// Parses one in-memory document set (used by tests and stdin).
    public mutating func load(text: String, file: String) throws -> Cluster {
        loadText(Data(text.utf8), file: file)
        if !errors.isEmpty { throw InputError(errors) }
        return cluster
    }

    static func manifestFiles(in dir: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
        var files = [String]()
        while let rel = e.nextObject() as? String {
            let lower = rel.lowercased()
            if lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") || lower.hasSuffix(".json") {
                let full = (dir as NSString).appendingPathComponent(rel)
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue { files.append(full) }
            }
        }
        return files.sorted()
    }

    private mutating func loadFile(_ path: String) {
        guard let data = Self.readLargeFile(path) ?? FileManager.default.contents(atPath: path) else {
            errors.append(Diagnostic(file: path, message: "cannot be read"))
            return
        }
        loadText(data, file: path)
    }

    private mutating func loadText(_ data: Data, file: String) {
        // A large JSON List has its items decoded as they are parsed (see FastJSON.parse).
        var decodedItems: [Any]?
        guard let docs = Self.parseDocuments(data, file: file, errors: &errors, listItem: { Self.decode($0, file: file, depth: 1) },
                                             items: &decodedItems) else { return }
        if let decodedItems, docs.count == 1, case .list = Self.decode(docs[0], file: file, depth: 0) {
            for d in decodedItems { add(d as! Decoded, file: file) }
            return
        }
        // Items decoded for a root that turned out not to be a List: parse again, whole.
        if decodedItems != nil {
            var ignored: [Any]?
            guard let whole = Self.parseDocuments(data, file: file, errors: &errors, listItem: nil, items: &ignored) else { return }
            for doc in whole { loadObject(doc, file: file, depth: 0) }
            Parallel.releaseInBackground(whole)
            return
        }
        for doc in docs { loadObject(doc, file: file, depth: 0) }
        Parallel.releaseInBackground(docs)
    }

    /// A regular file of 8 MB or more, read in parts on every core (copying 30 MB out of the
    /// page cache took 20 ms before anything else could start); nil for anything else, or when
    /// the file did not read back whole, and the caller reads it the plain way.
    static func readLargeFile(_ path: String) -> Data? {
        // Checked before opening: opening and closing a named pipe would lose what it holds.
        var st = stat()
        guard Parallel.cores > 1, stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size >= 8 << 20 else { return nil }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        let size = Int(st.st_size)
        guard let buffer = malloc(size) else { return nil }
        nonisolated(unsafe) let base = buffer
        let parts = Parallel.cores
        let complete = Parallel.map(count: parts) { (k: Int) -> Bool in
            var at = size * k / parts
            let end = size * (k + 1) / parts
            while at < end {
                let n = pread(fd, base + at, end - at, off_t(at))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                at += n
            }
            return true
        }
        guard complete.allSatisfy({ $0 }) else { free(buffer); return nil }
        return Data(bytesNoCopy: buffer, count: size, deallocator: .free)
    }

    /// Parses YAML (which includes JSON) into documents; reports syntax errors with line numbers.
    public static func parseDocuments(_ data: Data, file: String, errors: inout [Diagnostic]) -> [KNode]? {
        var ignored: [Any]?
        return parseDocuments(data, file: file, errors: &errors, listItem: nil, items: &ignored)
    }

    /// As above; `listItem`, when given, is applied to the items of a large JSON root object's
    /// `items` list as they are parsed, and `items` receives the results (nil when not done).
    static func parseDocuments(_ data: Data, file: String, errors: inout [Diagnostic],
                               listItem: ((KNode) -> Any)?, items: inout [Any]?) -> [KNode]? {
        // memchr, not Data.contains: the byte-by-byte iterator costs ~0.1 s on 30 MB.
        let hasNUL = data.withUnsafeBytes { raw in raw.count > 0 && memchr(raw.baseAddress!, 0, raw.count) != nil }
        if hasNUL {
            errors.append(Diagnostic(file: file, message: "not a YAML or JSON text (binary data)"))
            return nil
        }
        // JSON that is all ASCII (what kubectl prints, unless a value holds other text) is parsed
        // from the bytes as they are: the UTF-8 validating copy of a 30 MB input into a String
        // took 20 ms that no other core could share.
        if data.withUnsafeBytes({ looksLikeJSON($0) && isASCII($0) }),
           let parsed = data.withUnsafeBytes({ FastJSON.parse($0.bindMemory(to: UInt8.self), items: listItem, slices: slices(listItem), file: file) }) {
            items = parsed.items
            return [parsed.root]
        }
        guard let text = String(data: data, encoding: .utf8) else {
            errors.append(Diagnostic(file: file, message: "not a YAML or JSON text (invalid UTF-8)"))
            return nil
        }
        if Self.looksLikeJSON(text) {
            var text = text
            if let parsed = text.withUTF8({ FastJSON.parse($0, items: listItem, slices: slices(listItem), file: file) }) {
                items = parsed.items
                return [parsed.root]
            }
        }
        if let fast = FastYAML.parse(text) { return fast }
        var docs = [KNode]()
        do {
            let parser = try Parser(yaml: text, resolver: .basic)
            while let root = try parser.nextRoot() {
                docs.append(try YamlConversion.convert(root))
            }
        } catch let e as YamlError {
            errors.append(syntaxDiagnostic(e, file: file, isJSON: Self.looksLikeJSON(text)))
            return nil
        } catch let e as YamlConversion.ConversionError {
            switch e {
            case .tooDeep: errors.append(Diagnostic(file: file, message: "nesting is too deep"))
            case .nonScalarKey(let line): errors.append(Diagnostic(file: file, line: line, message: "malformed YAML: mapping keys must be scalars"))
            case .alias(let line): errors.append(Diagnostic(file: file, line: line, message: "YAML aliases are not supported in manifests"))
            }
            return nil
        } catch {
            errors.append(Diagnostic(file: file, message: "malformed YAML: \(error)"))
            return nil
        }
        return docs
    }

    /// With `listItem`, what an EndpointSlice read straight from a List item decodes to.
    private static func slices(_ listItem: ((KNode) -> Any)?) -> ((EndpointSlice) -> Any)? {
        listItem == nil ? nil : { Decoded.slice($0, [], $0.ref.description) }
    }

    static func looksLikeJSON(_ text: String) -> Bool {
        looksLikeJSON(text.utf8)
    }

    static func looksLikeJSON(_ bytes: some Sequence<UInt8>) -> Bool {
        for c in bytes {
            if c == 32 || c == 9 || c == 10 || c == 13 { continue }
            return c == UInt8(ascii: "{") || c == UInt8(ascii: "[")
        }
        return false
    }

    /// Whether every byte is below 0x80: eight at a time, a part per core above 4 MB.
    static func isASCII(_ raw: UnsafeRawBufferPointer) -> Bool {
        nonisolated(unsafe) let raw = raw
        let parts = raw.count >= 4 << 20 ? Parallel.cores : 1
        return Parallel.map(count: parts) { (k: Int) -> Bool in
            let end = raw.count * (k + 1) / parts
            var acc: UInt64 = 0, i = raw.count * k / parts
            while i + 8 <= end { acc |= raw.loadUnaligned(fromByteOffset: i, as: UInt64.self); i += 8 }
            while i < end { acc |= UInt64(raw[i]); i += 1 }
            return acc & 0x8080_8080_8080_8080 == 0
        }.allSatisfy { $0 }
    }

    static func syntaxDiagnostic(_ e: YamlError, file: String, isJSON: Bool) -> Diagnostic {
        let what = isJSON ? "malformed JSON" : "malformed YAML"
        switch e {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            var msg = problem
            if let context { msg = "\(context.text) \(problem)" }
            return Diagnostic(file: file, line: mark.line, message: "\(what): \(msg) (line \(mark.line), column \(mark.column))")
        case .reader(let problem, _, _, _):
            return Diagnostic(file: file, message: "\(what): \(problem)")
        default:
            return Diagnostic(file: file, message: "\(what): \(e)")
        }
    }

    /// What one document decodes to; computed without touching the loader (so items of a List
    /// decode on every core), then added in input order.
    private enum Decoded {
        case empty
        case error(Diagnostic)
        case note(Diagnostic)
        case badAPIVersion(Diagnostic)
        case list([KNode])
        case service(Service?, [Diagnostic], String)
        case slice(EndpointSlice?, [Diagnostic], String)
        case endpoints([EndpointSlice], [Diagnostic], String)
        case node(KubeNode?, [Diagnostic], String)
    }

    private mutating func loadObject(_ doc: KNode, file: String, depth: Int) {
        switch Self.decode(doc, file: file, depth: depth) {
        case .list(let items):
            let decoded = Parallel.map(count: items.count, minimumPerTask: 256) { Self.decode(items[$0], file: file, depth: depth + 1) }
            for d in decoded { add(d, file: file) }
        case let d:
            add(d, file: file)
        }
    }

    private static func decode(_ doc: KNode, file: String, depth: Int) -> Decoded {
        if case .null = doc.value { return .empty }  // empty document ("---" at the end)
        guard case .map(let m) = doc.value else {
            return .error(Diagnostic(file: file, line: doc.line, message: "expected a Kubernetes object, got \(doc.shortDescription)"))
        }
        var kind = ""
        if case .string(let k)? = m["kind"]?.value { kind = k }
        var apiVersion = ""
        if case .string(let a)? = m["apiVersion"]?.value { apiVersion = a }
        func apiVersionProblem(_ expected: [String]) -> Decoded? {
            if expected.contains(apiVersion) { return nil }
            return .badAPIVersion(Self.apiVersionDiagnostic(apiVersion, expected: expected, kind: kind, doc: doc, file: file))
        }
        switch kind {
        case "List", "ServiceList", "EndpointSliceList", "EndpointsList", "NodeList":
            guard depth == 0 else {
                return .error(Diagnostic(file: file, line: doc.line, message: "nested \(kind) is not supported"))
            }
            switch m["items"]?.value {
            case .list(let items)?: return .list(items)
            case .null?, nil: return .empty
            default: return .error(Diagnostic(file: file, line: doc.line, object: kind, field: "items", message: "expected a list"))
            }
        case "Service":
            if let bad = apiVersionProblem(["v1"]) { return bad }
            if let label = ignoredLabel(m) {
                return .note(Diagnostic(.note, file: file, object: Self.objectName(kind, m, file: file),
                                        message: "labelled \(label): kube-proxy does not serve it; skipped"))
            }
            let (svc, problems) = Decoders.service(doc, file: file)
            return .service(svc, problems, svc?.ref.description ?? "Service")
        case "EndpointSlice":
            if let bad = apiVersionProblem(["discovery.k8s.io/v1"]) { return bad }
            if ignoredLabel(m) != nil { return .empty }  // e.g. every slice of a headless Service
            let (slice, problems) = Decoders.endpointSlice(doc, file: file)
            return .slice(slice, problems, slice?.ref.description ?? "EndpointSlice")
        case "Endpoints":
            if let bad = apiVersionProblem(["v1"]) { return bad }
            if ignoredLabel(m) != nil { return .empty }
            let (slices, problems) = Decoders.endpoints(doc, file: file)
            return .endpoints(slices, problems, slices.first?.ref.description ?? "Endpoints")
        case "Node":
            if let bad = apiVersionProblem(["v1"]) { return bad }
            let (node, problems) = Decoders.node(doc, file: file)
            return .node(node, problems, node?.ref.description ?? "Node")
        case "":
            return .error(Diagnostic(file: file, line: doc.line, field: "kind", message: "required value is missing (not a Kubernetes object)"))
        default:
            var name = ""
            if case .map(let meta)? = m["metadata"]?.value, case .string(let n)? = meta["name"]?.value { name = n }
            return .note(Diagnostic(.note, file: file, object: name.isEmpty ? kind : "\(kind) \(name)",
                                    message: "kind \(kind) is not used by kuberules; skipped"))
        }
    }

    private mutating func add(_ decoded: Decoded, file: String) {
        switch decoded {
        case .empty: break
        case .list: errors.append(Diagnostic(file: file, message: "nested List is not supported"))
        case .error(let d): errors.append(d)
        case .note(let d): warnings.append(d)
        case .badAPIVersion(let d):
            if skipInvalid { warnings.append(Diagnostic(.warning, file: file, object: d.object, field: d.field, message: d.message + "; object skipped")) } else { errors.append(d) }
        case .service(let svc, let problems, let object):
            if accept(problems, object: object, file: file), let svc { cluster.services.append(svc) }
        case .slice(let slice, let problems, let object):
            if accept(problems, object: object, file: file), let slice {
                if slice.serviceName.isEmpty {
                    warnings.append(Diagnostic(.warning, file: file, object: slice.ref.description, field: "metadata.labels",
                                               message: "no kubernetes.io/service-name label; ignored (as kube-proxy does)"))
                } else if slice.family != nil {
                    cluster.slices.append(slice)
                }
            }
        case .endpoints(let slices, let problems, let object):
            if accept(problems, object: object, file: file) { cluster.legacyEndpoints.append(contentsOf: slices) }
        case .node(let node, let problems, let object):
            if accept(problems, object: object, file: file), let node { cluster.nodes.append(node) }
        }
    }

    /// kube-proxy watches Services, EndpointSlices and Endpoints through a label selector that
    /// leaves out objects carrying either of these labels (another service proxy serves them, or
    /// they belong to a headless Service): such objects are skipped here too.
    static let ignoredLabels = ["service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"]

    private static func ignoredLabel(_ m: KMap) -> String? {
        guard case .map(let meta)? = m["metadata"]?.value, case .map(let labels)? = meta["labels"]?.value else { return nil }
        return ignoredLabels.first { labels[$0] != nil }
    }

    /// `Kind namespace/name` for a note, from whatever metadata the object has.
    private static func objectName(_ kind: String, _ m: KMap, file: String) -> String {
        guard case .map(let meta)? = m["metadata"]?.value, case .string(let name)? = meta["name"]?.value else { return kind }
        var ns = ""
        if case .string(let n)? = meta["namespace"]?.value { ns = n }
        return ObjectRef(kind: kind, namespace: kind == "Node" ? "" : (ns.isEmpty ? "default" : ns), name: name, file: file).description
    }

    private static func apiVersionDiagnostic(_ v: String, expected: [String], kind: String, doc: KNode, file: String) -> Diagnostic {
        var object = kind
        if case .map(let m) = doc.value { object = objectName(kind, m, file: file) }
        return Diagnostic(file: file, object: object, field: "apiVersion",
                          message: v.isEmpty ? "required value is missing" : "unsupported apiVersion \"\(v)\" for \(kind) (expected \(expected.joined(separator: " or ")))")
    }

    /// Returns true when the object may be used.
    private mutating func accept(_ problems: [Diagnostic], object: String, file: String) -> Bool {
        if problems.isEmpty { return true }
        if skipInvalid {
            for p in problems {
                var w = p; w.severity = .warning; w.message += " (object skipped)"
                warnings.append(w)
            }
            return false
        }
        errors.append(contentsOf: problems)
        return false
    }

    /// Loads a KubeProxyConfiguration file.
    public static func loadProxyConfiguration(path: String) throws -> ProxyConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InputError(file: path, message: "cannot be read")
        }
        var errors = [Diagnostic]()
        guard let docs = parseDocuments(data, file: path, errors: &errors) else { throw InputError(errors) }
        let nonEmpty = docs.filter { if case .null = $0.value { return false }; return true }
        guard nonEmpty.count == 1 else {
            throw InputError(file: path, message: "expected exactly one KubeProxyConfiguration document, found \(nonEmpty.count)")
        }
        let (config, problems) = Decoders.proxyConfiguration(nonEmpty[0], file: path)
        if !problems.isEmpty { throw InputError(problems) }
        return config
    }
}
