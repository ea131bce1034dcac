import Foundation
import XCTest
@testable import KubeModel

/// The direct EndpointSlice reader must give exactly what the tree path gives (the loader's
/// kind, apiVersion and label checks, then `Decoders.endpointSlice`), and give up on anything
/// that path would report or treat differently.
final class FastSliceTests: XCTestCase {
    static let base = """
    {
      "apiVersion": "discovery.k8s.io/v1",
      "kind": "EndpointSlice",
      "addressType": "IPv4",
      "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web", "x": "y"},
                   "uid": "1234", "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:a": {}}}]},
      "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP", "appProtocol": "dns"}],
      "endpoints": [
        {"addresses": ["10.1.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "node-a",
         "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}, "zone": "z1",
         "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": "node-a"}]}},
        {"addresses": ["10.1.0.2", "10.1.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        {"addresses": ["10.1.0.4"], "conditions": {}, "nodeName": ""}
      ]
    }
    """

    /// Variants of `base`: (what is replaced, by what).
    static let variants: [(String, String)] = [
        ("", ""),
        (#""namespace": "shop", "#, ""),
        (#""namespace": "shop""#, #""namespace": null"#),
        (#""namespace": "shop""#, #""namespace": "Shop""#),
        (#""namespace": "shop""#, #""namespace": """#),
        (#""name": "web-abc""#, #""name": """#),
        (#""name": "web-abc""#, #""name": null"#),
        (#""name": "web-abc""#, #""name": 7"#),
        (#""kubernetes.io/service-name": "web", "#, ""),
        (#""x": "y""#, #""x": 1"#),
        (#""x": "y""#, #""x": null"#),
        (#""x": "y""#, #""service.kubernetes.io/headless": """#),
        (#""x": "y""#, #""service.kubernetes.io/service-proxy-name": "other""#),
        (#""x": "y""#, #""x": "y", "x": "z""#),
        (#""labels": {"kubernetes.io/service-name": "web", "x": "y"}"#, #""labels": null"#),
        (#""addressType": "IPv4""#, #""addressType": "IPv6""#),
        (#""addressType": "IPv4""#, #""addressType": "FQDN""#),
        (#""addressType": "IPv4""#, #""addressType": null"#),
        (#""addressType": "IPv4","#, ""),
        (#""apiVersion": "discovery.k8s.io/v1""#, #""apiVersion": "discovery.k8s.io/v1beta1""#),
        (#""kind": "EndpointSlice""#, #""kind": "Endpoints""#),
        (#""kind": "EndpointSlice""#, #""kind": "EndpointSlice", "kind": "EndpointSlice""#),
        (#""port": 8080"#, #""port": 0"#),
        (#""port": 8080"#, #""port": 70000"#),
        (#""port": 8080"#, #""port": null"#),
        (#""port": 8080"#, #""port": 8080.0"#),
        (#""port": 8080"#, #""port": "8080""#),
        (#""protocol": "TCP""#, #""protocol": """#),
        (#""protocol": "TCP""#, #""protocol": null"#),
        (#""protocol": "TCP""#, #""protocol": "ICMP""#),
        (#""name": "dns""#, #""name": "http""#),
        (#""name": "dns""#, #""name": "DNS""#),
        (#""name": "dns""#, #""name": null"#),
        (#""ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, "#, #""ports": [null, "#),
        (#""ports": ["#, #""ports": null, "x": ["#),
        (#""addresses": ["10.1.0.4"]"#, #""addresses": []"#),
        (#""addresses": ["10.1.0.4"]"#, #""addresses": null"#),
        (#""addresses": ["10.1.0.4"]"#, #""addresses": ["fd00::4"]"#),
        (#""addresses": ["10.1.0.4"]"#, #""addresses": ["10.1.0.04"]"#),
        (#""addresses": ["10.1.0.4"]"#, #""addresses": ["10.1.0.4", null]"#),
        (#""addresses": ["10.1.0.4"]"#, #""addresses": [4]"#),
        (#""addresses": ["10.1.0.4"]"#, #""addresses": ["10.1.0.4"], "addresses": ["10.1.0.5"]"#),
        (#""ready": true"#, #""ready": null"#),
        (#""ready": true"#, #""ready": "true""#),
        (#""ready": false"#, #""ready": 0"#),
        (#""conditions": {}"#, #""conditions": null"#),
        (#""conditions": {}"#, #""conditions": []"#),
        (#""nodeName": "node-a""#, #""nodeName": null"#),
        (#""nodeName": "node-a""#, #""nodeName": 1"#),
        (#""zone": "z1""#, #""zone": null"#),
        (#""forZones": [{"name": "z1"}]"#, #""forZones": [{"name": null}]"#),
        (#""forZones": [{"name": "z1"}]"#, #""forZones": [null]"#),
        (#""forZones": [{"name": "z1"}]"#, #""forZones": null"#),
        (#""forNodes": [{"name": "node-a"}]"#, #""forNodes": [{"name": "node-a", "x": 1}, {"name": "node-b"}]"#),
        (#""hints": {"#, #""hints": null, "h": {"#),
        (#""endpoints": ["#, #""endpoints": [null, "#),
        (#""endpoints": ["#, #""endpoints": null, "e": ["#),
        (#""web-abc""#, #""web-\u0061bc""#),
        (#""uid": "1234""#, #""uid": "1234", "uid": "5""#),
        (#""uid": "1234""#, #""uid": {"a": [1, 2, {"b": null}]}"#),
        ("\"conditions\": {\"ready\": true,", "\"conditions\": {\"ready\": true, \"ready\": true,"),
        // K and the Kelvin sign are one key to Swift Strings (the tree path refuses the object).
        (#""x": "y""#, "\"K\": \"1\", \"\u{212A}\": \"2\""),
        (#""uid": "1234""#, "\"uid\": \"1234\", \"r\u{e9}\": 1"),
    ]

    /// What the loader's tree path makes of one item: the slice, when it has no problem.
    func viaTree(_ text: String) -> EndpointSlice?? {
        guard let node = Array(text.utf8).withUnsafeBufferPointer({ FastJSON.parse($0) }) else { return .none }  // syntax: nil
        guard case .map(let m) = node.value, case .string("EndpointSlice")? = m["kind"]?.value,
              case .string("discovery.k8s.io/v1")? = m["apiVersion"]?.value else { return .some(nil) }
        if case .map(let meta)? = m["metadata"]?.value, case .map(let labels)? = meta["labels"]?.value,
           ManifestLoader.ignoredLabels.contains(where: { labels[$0] != nil }) { return .some(nil) }
        let (slice, problems) = Decoders.endpointSlice(node, file: "f.json")
        return .some(problems.isEmpty && slice?.family != nil ? slice : nil)
    }

    func viaDirect(_ text: String) -> EndpointSlice? {
        Array(text.utf8).withUnsafeBufferPointer { buf -> EndpointSlice? in
            var p = FastJSON.Parser(bytes: buf)
            let s = p.endpointSlice(depth: 2, file: "f.json")
            if s == nil { XCTAssertEqual(p.pos, 0, "a reader that gives up leaves pos where it was") }
            return s
        }
    }

    func testDirectReadingEqualsTheTreePathOrGivesUp() {
        var direct = 0
        for (from, to) in Self.variants {
            let text = from.isEmpty ? Self.base : Self.base.replacingOccurrences(of: from, with: to)
            XCTAssert(from.isEmpty || text != Self.base, "variant \(from) does not apply")
            let tree = viaTree(text)
            guard let got = viaDirect(text) else { continue }
            direct += 1
            // Read directly: the tree path must accept the text and give the same slice.
            XCTAssertEqual(tree, .some(got), "\(from) -> \(to)")
        }
        XCTAssertGreaterThan(direct, 15, "the common shapes are read directly")
        XCTAssertNotNil(viaDirect(Self.base))
    }

    /// The loader gives the same slices and warnings for a large List laid out one item per
    /// line group (parsed in parts, where slices are read directly) as for the same List on one
    /// line (parsed whole, every item through its tree), valid items and invalid ones alike.
    func testLoaderResultsAreTheSameWithAndWithoutTheDirectReader() throws {
        // A key given twice fails the whole fast parse (the YAML path reports it): left out here.
        let variants = Self.variants.filter { v in !v.1.contains("\"x\": \"y\", \"x\"") && !v.1.contains("\"kind\": \"EndpointSlice\", \"kind\"")
            && !v.1.contains("\"addresses\": [\"10.1.0.5\"]") && !v.1.contains("\u{212A}") && !v.1.contains("\"uid\": \"5\"") && !v.1.contains("\"ready\": true, \"ready\"") }
        var items = [String]()
        for i in 0..<1200 {
            let (from, to) = variants[i % variants.count]
            var item = Self.base.replacingOccurrences(of: "web-abc", with: "web-\(i)")
            if !from.isEmpty { item = item.replacingOccurrences(of: from, with: to) }
            items.append(item)
        }
        let pretty = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": [\n"
            + items.map { $0.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n") }.joined(separator: ",\n") + "\n  ]\n}\n"
        let flat = "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": ["
            + items.map { $0.replacingOccurrences(of: "\n", with: " ") }.joined(separator: ", ") + "]}"
        XCTAssertGreaterThan(pretty.utf8.count, 1 << 20, "large enough to be parsed in parts")
        var a = ManifestLoader(skipInvalid: true), b = ManifestLoader(skipInvalid: true)
        let ca = try a.load(text: pretty, file: "f.json"), cb = try b.load(text: flat, file: "f.json")
        XCTAssertEqual(ca.slices.count, cb.slices.count)
        XCTAssertEqual(ca.slices, cb.slices)
        XCTAssertEqual(a.warnings.map(\.description), b.warnings.map(\.description))
        XCTAssertGreaterThan(ca.slices.count, 300)
        XCTAssertGreaterThan(a.warnings.count, 100)
    }
}
