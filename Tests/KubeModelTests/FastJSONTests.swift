import Foundation
import XCTest
@testable import KubeModel
import Parallel

/// The JSON fast path must give exactly the trees the YAML path gives (values and lines), and
/// leave everything it does not accept to the YAML path, which reports it.
final class FastJSONTests: XCTestCase {
    func viaJSON(_ text: String) -> KNode? {
        var t = text
        return t.withUTF8 { FastJSON.parse($0) }
    }

    func viaYAML(_ text: String) -> KNode? { FastYAML.parse(text)?.first }

    /// Parsed with a large list cut into `parts` parts (any size of input).
    func inParts(_ text: String, _ parts: Int) -> KNode? {
        var t = text
        return t.withUTF8 { FastJSON.parse($0, parts: parts, splitAbove: 0) }
    }

    /// A `kubectl get -o json`-style list of services: items one per line at one column, with
    /// nested lists of objects, escapes and numbers.
    func prettyList(_ n: Int) -> String {
        var items = [String]()
        for i in 0..<n {
            items.append("""
              {
               "kind": "Service", "metadata": {"name": "s-\(i)", "note": "a \\"quoted\\" \\n line, {x}"},
               "spec": {"ports": [
                {"port": \(i % 65535 + 1), "name": "p"},
                {"port": 2, "protocol": "UDP"}
               ], "ok": true, "ratio": 0.5}
              }
            """)
        }
        return "{\n \"kind\": \"List\",\n \"items\": [\n" + items.joined(separator: ",\n") + "\n ],\n \"metadata\": {}\n}\n"
    }

    func testLargeListsParsedInPartsGiveTheSameTree() throws {
        let text = prettyList(101)
        let whole = try XCTUnwrap(inParts(text, 1))
        for parts in [2, 3, 7, 200] { XCTAssertEqual(inParts(text, parts), whole, "\(parts) parts") }
        XCTAssertEqual(viaYAML(text), whole)
        // A top-level list too.
        let list = "[\n" + (0..<50).map { "  {\"i\": \($0),\n   \"s\": [\n  1]}" }.joined(separator: ",\n") + "\n]"
        XCTAssertEqual(inParts(list, 4), inParts(list, 1))
        XCTAssertEqual(inParts(list, 4), viaYAML(list))
    }

    func testAPrettyListIsCutAtItemStarts() throws {
        var text = prettyList(101)
        let r = try XCTUnwrap(text.range(of: "[\n  {"))
        let first = text.utf8.distance(from: text.startIndex, to: r.upperBound) - 1
        let cuts = text.withUTF8 { FastJSON.cuts($0, first: first, end: $0.count, parts: 3) }
        XCTAssertEqual(cuts.count, 3)
        text.withUTF8 { b in
            for c in cuts.dropFirst() {
                XCTAssertEqual(b[c], UInt8(ascii: "{"))
                XCTAssertEqual(Array(b[(c - 4)..<c]), Array(",\n  ".utf8))
            }
        }
        // Not laid out one item per line: no cut.
        var flat = #"{"items": [{"a": 1}, {"b": 2}, {"c": 3}]}"#
        XCTAssertEqual(flat.withUTF8 { FastJSON.cuts($0, first: 11, end: $0.count, parts: 3) }, [11])
    }

    func testAWrongCutFallsBackToOnePiece() throws {
        // Nested items start lines at the same column as the list's items: every guess after the
        // first item is inside it or in another list, and the parse must still be exact.
        let nested = "{\"items\": [\n  {\"a\": [\n  {\"x\": 1},\n  {\"y\": 2},\n  {\"z\": 3}\n]},\n  {\"b\": 2}\n],\n \"more\": [\n  {\"c\": 1},\n  {\"d\": 2}\n]}"
        let whole = try XCTUnwrap(inParts(nested, 1))
        for parts in 2...6 { XCTAssertEqual(inParts(nested, parts), whole, "\(parts) parts") }
        XCTAssertEqual(viaYAML(nested), whole)
    }

    func testErrorsInAnyPartAreErrors() {
        let text = prettyList(40)
        for (bad, what) in [(text.replacingOccurrences(of: "\"s-3\"", with: "\"s-3"), "first part"),
                            (text.replacingOccurrences(of: "\"s-38\"", with: "s-38"), "last part"),
                            (text.replacingOccurrences(of: "\"name\": \"s-20\"", with: "\"name\": \"s-20\", \"name\": 1"), "duplicate key"),
                            (text.replacingOccurrences(of: "\n ],\n \"metadata\"", with: "\n ,\n \"metadata\""), "list not closed")] {
            for parts in [2, 3, 5] { XCTAssertNil(inParts(bad, parts), "\(what), \(parts) parts") }
        }
    }

    func testSameTreesAsTheYAMLPath() {
        let docs = [
            #"{"apiVersion": "v1", "kind": "List", "items": [{"a": 1, "b": -2, "c": 1.5, "d": 1e3, "e": true, "f": false, "g": null}]}"#,
            "{\n  \"s\": \"plain\",\n  \"esc\": \"q\\\" b\\\\ s\\/ n\\n t\\t u\\u00e9\",\n  \"n\": [1, 2, [3, {}], []],\n  \"k\": {\"x\": \"80\", \"y\": 0}\n}",
            #"{"unicode": "grüße ✓", "empty": "", "zero": 0, "neg": -0.25, "big": 123456789012}"#,
            "[\n1,\n2\n]",
            #""just a string""#,
        ]
        for doc in docs {
            let a = viaJSON(doc), b = viaYAML(doc)
            XCTAssertNotNil(a, doc)
            XCTAssertEqual(a, b, doc)
        }
    }

    func testLargeFilesReadInPartsReadWhole() throws {
        let path = NSTemporaryDirectory() + "kuberules-large-\(getpid()).json"
        defer { unlink(path) }
        var bytes = [UInt8](repeating: 0, count: (9 << 20) + 12345)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 7) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let got = try XCTUnwrap(ManifestLoader.readLargeFile(path) ?? (Parallel.cores == 1 ? Data(bytes) : nil))
        XCTAssert(got == Data(bytes))
        XCTAssertNil(ManifestLoader.readLargeFile(NSTemporaryDirectory()), "not a regular file")
        XCTAssertNil(ManifestLoader.readLargeFile(path + ".missing"))
        // A named pipe is not opened (opening and closing it would lose what it holds).
        let fifo = path + ".fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        defer { unlink(fifo) }
        XCTAssertNil(ManifestLoader.readLargeFile(fifo))
    }

    func testASCIICheck() {
        for text in ["", "a", "{\"a\": 1}", String(repeating: "x", count: 17), String(repeating: "x", count: 16) + "é",
                     "é" + String(repeating: "x", count: 16), "grüße", String(repeating: "y", count: 7) + "\u{7f}"] {
            let want = text.utf8.allSatisfy { $0 < 0x80 }
            XCTAssertEqual(Array(text.utf8).withUnsafeBytes { ManifestLoader.isASCII($0) }, want, text)
        }
    }

    func testCountMatchesAByteByByteCount() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let bytes = (0..<Int.random(in: 0...100, using: &rng)).map { _ in [0x0A, 0x00, 0xFF, 0x8A, 0x0B, 0x20][Int.random(in: 0..<6, using: &rng)] as UInt8 }
            let from = bytes.isEmpty ? 0 : Int.random(in: 0...bytes.count, using: &rng), to = Int.random(in: from...max(from, bytes.count), using: &rng)
            for b: UInt8 in [0x0A, 0x00, 0xFF, 0x8A] {
                let want = bytes[from..<to].filter { $0 == b }.count
                XCTAssertEqual(bytes.withUnsafeBufferPointer { FastJSON.count(b, in: $0, from: from, to: to) }, want)
            }
        }
    }

    /// The scalars read without a String resolve as the YAML path resolves them.
    func testSimpleScalarsResolveAsPlainScalars() {
        for t in ["true", "false", "null", "0", "-0", "7", "-7", "80", "65535", "123456789012345678", "-123456789012345678"] {
            let got = Array(t.utf8).withUnsafeBufferPointer { FastJSON.simpleScalar($0) }
            XCTAssertEqual(got, YamlConversion.resolvePlain(t), t)
        }
        for t in ["1234567890123456789", "01", "-", "", "1.5", "1e3", "tru", "truex", "nul", "True", "0x1f", "+1"] {
            XCTAssertNil(Array(t.utf8).withUnsafeBufferPointer { FastJSON.simpleScalar($0) }, t)
        }
        XCTAssertEqual(viaJSON(#"{"big": 1234567890123456789, "x": -0}"#), viaYAML(#"{"big": 1234567890123456789, "x": -0}"#))
    }

    func testSurrogatePairs() {
        // Valid JSON that libyaml refuses (YAML has no surrogate escapes): the fast path reads it.
        XCTAssertEqual(viaJSON(#"{"e": "\ud83d\ude00"}"#)?["e"]?.value, .string("😀"))
    }

    func testRejectsWhatItDoesNotAccept() {
        for bad in [#"{"a": 1,}"#, #"{"a": 1} x"#, #"{"a": 1, "a": 2}"#, #"{"a": 01}"#, #"{"a": tru}"#,
                    #"{"a": "\x"}"#, "{\"a\": \"tab\there\"}", #"{"a": "\ud83d"}"#, #"{"a" 1}"#, #"[1 2]"#, "{", "",
                    String(repeating: "[", count: 300) + String(repeating: "]", count: 300)] {
            XCTAssertNil(viaJSON(bad), bad)
        }
    }

    func testLargeListLoadsThroughTheFastPath() throws {
        var items = [String]()
        for i in 0..<300 {
            items.append(#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s\#(i)", "namespace": "ns"}, "spec": {"clusterIP": "10.96.\#(i / 250).\#(i % 250 + 1)", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}"#)
        }
        let text = #"{"apiVersion": "v1", "kind": "List", "items": ["# + items.joined(separator: ",\n") + "]}"
        XCTAssertNotNil(viaJSON(text))
        var loader = ManifestLoader()
        let cluster = try loader.load(text: text, file: "list.json")
        XCTAssertEqual(cluster.services.count, 300)
        XCTAssertEqual(cluster.services.map(\.ref.name), (0..<300).map { "s\($0)" })
    }

    /// What loading a text gives: service names and every diagnostic (errors, or warnings).
    struct Loaded: Equatable { var names: [String]; var diagnostics: [String] }

    func loaded(_ text: String, skipInvalid: Bool = false) -> Loaded {
        var loader = ManifestLoader(skipInvalid: skipInvalid)
        do {
            let c = try loader.load(text: text, file: "big.json")
            return Loaded(names: c.services.map(\.ref.name), diagnostics: loader.warnings.map(\.description))
        } catch let e as InputError {
            return Loaded(names: [], diagnostics: e.diagnostics.map(\.description))
        } catch {
            return Loaded(names: [], diagnostics: ["\(error)"])
        }
    }

    func testALargePrettyListIsDecodedWhileItIsParsed() throws {
        // Over 1 MB with one item per block at one column: parsed in parts, each item decoded as
        // it is parsed. The same text without newlines is parsed and decoded whole.
        let items = (0..<6000).map { i in
            "  {\"apiVersion\": \"v1\", \"kind\": \"Service\",\n   \"metadata\": {\"name\": \"s\(i)\", \"namespace\": \"ns\"},\n" +
            "   \"spec\": {\"clusterIP\": \"10.96.\(i / 250).\(i % 250 + 1)\", \"ports\": [{\"name\": \"http\", \"port\": \(i == 4321 ? 70000 : 80), \"protocol\": \"TCP\"}]}}"
        }
        let pretty = "{\n \"apiVersion\": \"v1\",\n \"kind\": \"List\",\n \"items\": [\n" + items.joined(separator: ",\n") + "\n ]\n}\n"
        XCTAssertGreaterThan(pretty.utf8.count, 1 << 20)
        let flat = pretty.replacingOccurrences(of: "\n", with: "")
        XCTAssertEqual(loaded(pretty).diagnostics, ["big.json: Service ns/s4321: spec.ports[0].port: 70000 is not a valid port (1-65535)"])
        XCTAssertEqual(loaded(pretty), loaded(flat))
        let skipped = loaded(pretty, skipInvalid: true)
        XCTAssertEqual(skipped.names, (0..<6000).filter { $0 != 4321 }.map { "s\($0)" })
        XCTAssertEqual(skipped, loaded(flat, skipInvalid: true))
        // A root that is not a List but has a large `items` field: loaded as what it is.
        let service = "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"web\", \"namespace\": \"ns\"},\n" +
            " \"spec\": {\"clusterIP\": \"10.96.0.1\", \"ports\": [{\"port\": 80}]},\n \"items\": [\n" + items.joined(separator: ",\n") + "\n ]\n}\n"
        XCTAssertEqual(loaded(service), Loaded(names: ["web"], diagnostics: []))
    }

    func testObjectsKeepTheirFieldsWithAndWithoutTheNameIndex() {
        // Past KMap.indexThreshold fields an object is indexed by name; lookups, duplicate
        // detection and order-insensitive equality must not change.
        for n in [3, KMap.indexThreshold, KMap.indexThreshold + 1, 200] {
            let fields = (0..<n).map { #""k\#($0)": \#($0)"# }
            let doc = "{" + fields.joined(separator: ", ") + "}"
            let node = viaJSON(doc)
            XCTAssertNotNil(node, "\(n) fields")
            for i in [0, n / 2, n - 1] { XCTAssertEqual(node?["k\(i)"]?.value, .int(i), "\(n) fields") }
            XCTAssertNil(node?["k\(n)"])
            XCTAssertNil(viaJSON("{" + (fields + [#""k0": 1"#]).joined(separator: ", ") + "}"), "duplicate key, \(n) fields")
            XCTAssertEqual(viaJSON("{" + fields.reversed().joined(separator: ", ") + "}"), node, "order, \(n) fields")
            // The YAML path (KMap.insert, indexed past the threshold) agrees, in document order.
            let yaml = viaYAML(doc)
            XCTAssertEqual(yaml, node, "YAML, \(n) fields")
            if case .map(let a)? = yaml?.value, case .map(let b)? = node?.value {
                XCTAssertEqual(a.keys, b.keys)
                XCTAssertEqual(a.keys, (0..<n).map { "k\($0)" })
            } else {
                XCTFail("\(n) fields: not objects")
            }
            XCTAssertNil(viaYAML("{" + (fields + [#""k\#(n - 1)": 1"#]).joined(separator: ", ") + "}"), "duplicate last key, \(n) fields")
        }
        var m = KMap()
        XCTAssertTrue(m.insert("a", KNode(.int(1))))
        XCTAssertFalse(m.insert("a", KNode(.int(2))))
        m.set("a", KNode(.int(3)))
        XCTAssertEqual(m["a"]?.value, .int(3))
        XCTAssertEqual(m.count, 1)
        XCTAssertNotEqual(KMap([("a", KNode(.int(1)))]), KMap([("a", KNode(.int(1))), ("b", KNode(.null))]))
    }
}
