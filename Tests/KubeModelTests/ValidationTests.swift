import Foundation
import XCTest
@testable import KubeModel

final class ValidationTests: XCTestCase {
    /// Loads `yaml` and returns the rendered error lines (empty if it loaded).
    func errors(_ yaml: String, file: String = "cluster.yaml", skipInvalid: Bool = false) -> [String] {
        var loader = ManifestLoader(skipInvalid: skipInvalid)
        do {
            _ = try loader.load(text: yaml, file: file)
            return []
        } catch let e as InputError {
            return e.diagnostics.map(\.description)
        } catch {
            XCTFail("unexpected error \(error)")
            return []
        }
    }

    func service(_ spec: String, name: String = "web", status: String = "") -> String {
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: \(name)
          namespace: shop
        spec:
        \(spec.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        \(status)
        """
    }

    func testPortOutOfRangeNamesFileObjectAndField() {
        let e = errors(service("""
        clusterIP: 10.96.0.1
        ports:
        - {name: a, port: 80}
        - {name: b, port: 70000}
        """))
        XCTAssertEqual(e, ["cluster.yaml: Service shop/web: spec.ports[1].port: 70000 is not a valid port (1-65535)"])
    }

    func testEveryProblemIsReportedAtOnce() {
        let e = errors(service("""
        clusterIP: 10.96.0.300
        externalIPs: [not-an-ip]
        loadBalancerSourceRanges: [10.0.0.0/33]
        sessionAffinity: ClientIP
        sessionAffinityConfig: {clientIP: {timeoutSeconds: -5}}
        ports:
        - {name: a, port: 80, protocol: ICMP}
        - {name: a, port: 81, nodePort: 99999}
        """))
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.clusterIP: \"10.96.0.300\" is not a valid IP address"), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.externalIPs[0]: \"not-an-ip\" is not a valid IP address"), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.loadBalancerSourceRanges[0]: \"10.0.0.0/33\" is not a valid CIDR"), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: -5 is not a valid timeout (1-86400 seconds)"), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.ports[0].protocol: unsupported protocol \"ICMP\" (TCP, UDP or SCTP)"), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.ports[1].name: duplicate port name \"a\" (also spec.ports[0])"), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.ports[1].nodePort: 99999 is not a valid port (1-65535)"), "\(e)")
    }

    func testWrongTypes() {
        let e = errors(service("""
        clusterIP: 10.96.0.1
        ports:
        - {name: a, port: "80"}
        - {name: b, port: [1]}
        externalIPs: 10.0.0.1
        """))
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.ports[0].port: expected an integer, got string \"80\""), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.ports[1].port: expected an integer, got a list"), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.externalIPs: expected a list, got string \"10.0.0.1\""), "\(e)")
    }

    func testMissingNameAndSpec() {
        let e = errors("apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n")
        XCTAssertEqual(e, ["cluster.yaml: Service shop/<unnamed>: metadata.name: required value is missing"])
        let e2 = errors("apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: shop}\n")
        XCTAssertTrue(e2.contains("cluster.yaml: Service shop/x: spec: required value is missing"), "\(e2)")
    }

    func testSecondPortNeedsAName() {
        let e = errors(service("clusterIP: 10.96.0.1\nports:\n- {port: 80}\n- {port: 81}"))
        XCTAssertTrue(e.contains("cluster.yaml: Service shop/web: spec.ports[0].name: required when a service has more than one port"), "\(e)")
    }

    func testEndpointAddressOfWrongFamily() {
        let e = errors("""
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        ports: [{name: http, port: 80}]
        endpoints:
        - addresses: ["fd00::1"]
        - addresses: [10.0.0.1]
          conditions: {ready: yes-please}
        """)
        XCTAssertTrue(e.contains("cluster.yaml: EndpointSlice shop/web-abc: endpoints[0].addresses[0]: fd00::1 is not an IPv4 address"), "\(e)")
        XCTAssertTrue(e.contains("cluster.yaml: EndpointSlice shop/web-abc: endpoints[1].conditions.ready: expected true or false, got string \"yes-please\""), "\(e)")
    }

    func testMalformedYAMLHasALine() {
        let e = errors("apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n  namespace: x\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertTrue(e[0].hasPrefix("cluster.yaml:"), e[0])
        XCTAssertTrue(e[0].contains("malformed YAML"), e[0])
        XCTAssertTrue(e[0].contains("line "), e[0])
    }

    func testMalformedJSON() {
        let e = errors("{\"apiVersion\": \"v1\", \"kind\": \"Service\",,}", file: "c.json")
        XCTAssertEqual(e.count, 1)
        XCTAssertTrue(e[0].hasPrefix("c.json:1"), e[0])
        XCTAssertTrue(e[0].contains("malformed JSON"), e[0])
    }

    func testBinaryGarbage() {
        var loader = ManifestLoader()
        var bytes = [UInt8](repeating: 0, count: 64)
        for i in bytes.indices { bytes[i] = UInt8((i * 37 + 11) % 256) }
        bytes[7] = 0
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kr-garbage-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("garbage.yaml")
        try! Data(bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try loader.load(paths: [file.path])) { error in
            let d = (error as! InputError).diagnostics
            XCTAssertEqual(d.map(\.description), ["\(file.path): not a YAML or JSON text (binary data)"])
        }
    }

    func testSkipInvalidLeavesTheObjectOutWithAWarning() throws {
        var loader = ManifestLoader(skipInvalid: true)
        let yaml = service("clusterIP: 10.96.0.1\nports: [{port: 0}]") + "\n---\n" +
            service("clusterIP: 10.96.0.2\nports: [{port: 80}]", name: "good")
        let c = try loader.load(text: yaml, file: "x.yaml")
        XCTAssertEqual(c.services.map(\.name), ["good"])
        XCTAssertEqual(loader.warnings.map(\.description), ["x.yaml: Service shop/web: spec.ports[0].port: 0 is not a valid port (1-65535) (object skipped)"])
    }

    func testUnknownKindIsANote() throws {
        var loader = ManifestLoader()
        let c = try loader.load(text: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n", file: "x.yaml")
        XCTAssertTrue(c.services.isEmpty)
        XCTAssertEqual(loader.warnings.first?.severity, .note)
    }

    /// kube-proxy's informers select `!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`
    /// for Services, EndpointSlices and Endpoints: objects with either label are not its business.
    func testObjectsForAnotherServiceProxyOrHeadlessAreSkipped() throws {
        var loader = ManifestLoader()
        let yaml = """
        {apiVersion: v1, kind: Service, metadata: {name: mine, namespace: n}, spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}}
        ---
        {apiVersion: v1, kind: Service, metadata: {name: theirs, namespace: n, labels: {service.kubernetes.io/service-proxy-name: other}}, spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}}
        ---
        {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: mine-1, namespace: n, labels: {kubernetes.io/service-name: mine}}, addressType: IPv4, endpoints: [{addresses: [10.0.0.1]}], ports: [{port: 80}]}
        ---
        {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: theirs-1, namespace: n, labels: {kubernetes.io/service-name: theirs, service.kubernetes.io/service-proxy-name: other}}, addressType: IPv4, endpoints: [{addresses: [10.0.0.2]}], ports: [{port: 80}]}
        ---
        {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: db-1, namespace: n, labels: {kubernetes.io/service-name: db, service.kubernetes.io/headless: ""}}, addressType: IPv4, endpoints: [{addresses: [10.0.0.3]}], ports: [{port: 5432}]}
        ---
        {apiVersion: v1, kind: Endpoints, metadata: {name: db, namespace: n, labels: {service.kubernetes.io/headless: ""}}, subsets: [{addresses: [{ip: 10.0.0.3}], ports: [{port: 5432}]}]}
        """
        let c = try loader.load(text: yaml, file: "x.yaml")
        XCTAssertEqual(c.services.map(\.name), ["mine"])
        XCTAssertEqual(c.slices.map(\.ref.name), ["mine-1"])
        XCTAssertTrue(c.legacyEndpoints.isEmpty)
        XCTAssertEqual(loader.warnings.map(\.description),
                       ["x.yaml: Service n/theirs: labelled service.kubernetes.io/service-proxy-name: kube-proxy does not serve it; skipped"])
        XCTAssertEqual(loader.warnings.first?.severity, .note)
    }

    func testListAndMultiDocument() throws {
        var loader = ManifestLoader()
        let yaml = """
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Service, metadata: {name: a, namespace: n}, spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}}
        ---
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}, "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 81}]}}
        ---
        """
        let c = try loader.load(text: yaml, file: "x.yaml")
        XCTAssertEqual(c.services.map { "\($0.namespace)/\($0.name)" }, ["n/a", "default/b"])
    }

    func testProxyConfigurationErrors() {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kr-cfg-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = dir.appendingPathComponent("proxy.yaml")
        try! Data("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.0.0.0/40\niptables: {masqueradeBit: 40}\nmode: userspace\n".utf8).write(to: f)
        XCTAssertThrowsError(try ManifestLoader.loadProxyConfiguration(path: f.path)) { error in
            let d = (error as! InputError).diagnostics.map(\.description)
            XCTAssertTrue(d.contains("\(f.path): KubeProxyConfiguration: clusterCIDR: \"10.0.0.0/40\" is not a valid CIDR"), "\(d)")
            XCTAssertTrue(d.contains("\(f.path): KubeProxyConfiguration: iptables.masqueradeBit: 40 must be in the range 0-31"), "\(d)")
            XCTAssertTrue(d.contains("\(f.path): KubeProxyConfiguration: mode: unsupported value \"userspace\" (iptables, ipvs or nftables)"), "\(d)")
        }
    }

    func testIPFormattingMatchesGo() {
        XCTAssertEqual(IPAddress("2001:DB8:0:0:1:0:0:1")?.description, "2001:db8::1:0:0:1")
        XCTAssertEqual(IPAddress("fd00:0:0:0:0:0:0:a")?.description, "fd00::a")
        XCTAssertEqual(IPAddress("2001:db8:0:1:1:1:1:1")?.description, "2001:db8:0:1:1:1:1:1")
        XCTAssertEqual(IPAddress("::")?.description, "::")
        XCTAssertEqual(IPAddress("::1")?.description, "::1")
        XCTAssertNil(IPAddress("010.1.1.1"))
        // IPv4 is read without inet_pton: it must accept and refuse exactly what inet_pton does.
        for t in ["0.0.0.0", "255.255.255.255", "10.128.0.10", "1.2.3.4", "256.1.1.1", "1.2.3.4.5", "1..2.3", ".1.2.3",
                  "1.2.3.", "01.2.3.4", "1.2.3.04", "1.2.3.0", "a.b.c.d", "1.2.3.4 ", " 1.2.3.4", "1.2.3.-4", "1000.1.1.1",
                  "0.0.0.00", "9.9.9.9", "199.200.201.202", "1.2.3.4/8", "1.2.3"] {
            var a = in_addr()
            let want = inet_pton(AF_INET, t, &a) == 1 ? IPAddress(v4: UInt32(bigEndian: a.s_addr)) : nil
            XCTAssertEqual(IPAddress(t), want, t)
        }
        XCTAssertNil(IPAddress("1.2.3"))
        XCTAssertEqual(CIDR(" 203.0.113.5/25")?.description, "203.0.113.0/25")
        XCTAssertEqual(CIDR("fd00:10:244::1/56")?.description, "fd00:10:244::/56")
        XCTAssertTrue(CIDR("10.0.0.0/8")!.contains(IPAddress("10.1.2.3")!))
        XCTAssertFalse(CIDR("10.0.0.0/8")!.contains(IPAddress("11.1.2.3")!))
    }
}
