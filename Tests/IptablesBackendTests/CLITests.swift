import Foundation
import XCTest

/// The command line as a user meets it: exit codes, errors on stderr, stdin, check's diff.
final class CLITests: XCTestCase {
    var example: URL { TestSupport.fixtures.appendingPathComponent("only-local-nodeports") }

    func testStdinAndExitZero() throws {
        let data = try Data(contentsOf: example.appendingPathComponent("cluster.yaml"))
        let r = try TestSupport.kuberules(["render", "--config", example.appendingPathComponent("proxy-config.yaml").path, "-"], stdin: data)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, try String(contentsOf: example.appendingPathComponent("expected.iptables"), encoding: .utf8))
    }

    func testBadInputExitsTwoWithNothingOnStdout() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-cli-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let bad = tmp.appendingPathComponent("cluster.yaml")
        try Data("""
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          clusterIP: 10.96.0.1
          ports:
          - {name: a, port: 80}
          - {name: b, port: 70000}
        """.utf8).write(to: bad)
        let r = try TestSupport.kuberules(["render", bad.path])
        XCTAssertEqual(r.status, 2)
        XCTAssertEqual(r.stdout, "")
        XCTAssertTrue(r.stderr.contains("\(bad.path): Service shop/web: spec.ports[1].port: 70000 is not a valid port (1-65535)"), r.stderr)
        // --skip-invalid renders the rest and warns.
        let s = try TestSupport.kuberules(["render", "--skip-invalid", bad.path])
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertTrue(s.stderr.contains("warning:"), s.stderr)
        XCTAssertFalse(s.stdout.contains("shop/web"))
    }

    func testUsageErrorsExitTwo() throws {
        XCTAssertEqual(try TestSupport.kuberules(["render"]).status, 2)
        XCTAssertEqual(try TestSupport.kuberules(["render", "--backend", "bogus", "x"]).status, 2)
        XCTAssertEqual(try TestSupport.kuberules(["frobnicate"]).status, 2)
        XCTAssertEqual(try TestSupport.kuberules(["render", "/nonexistent/file.yaml"]).status, 2)
        XCTAssertEqual(try TestSupport.kuberules(["render", "--node-ip", "300.1.1.1", "x"]).status, 2)
        let help = try TestSupport.kuberules(["render", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("Examples"))
    }

    func testCheckReportsADiffAndUpdates() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-check-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let golden = tmp.appendingPathComponent("golden.iptables")
        var text = try String(contentsOf: example.appendingPathComponent("expected.iptables"), encoding: .utf8)
        text = text.replacingOccurrences(of: "--probability 0.5000000000", with: "--probability 0.2500000000")
        try Data(text.utf8).write(to: golden)
        let args = ["--config", example.appendingPathComponent("proxy-config.yaml").path, example.appendingPathComponent("cluster.yaml").path]
        let r = try TestSupport.kuberules(["check", "--golden", golden.path] + args)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stdout.contains("-A KUBE-SVC-XPGD46QRK7WJZT7O"), r.stdout)
        XCTAssertTrue(r.stdout.contains("-") && r.stdout.contains("+") && r.stdout.contains("@@"), r.stdout)
        let u = try TestSupport.kuberules(["check", "--update", "--golden", golden.path] + args)
        XCTAssertEqual(u.status, 0, u.stderr)
        XCTAssertEqual(try TestSupport.kuberules(["check", "--golden", golden.path] + args).status, 0)
    }

    /// `--backend ipvs`: sections extractable on their own; on a kernel without IPVS, apply and
    /// diff exit 3 with a clear message and change nothing (checked only where IPVS is missing).
    func testIpvsSectionsAndMissingIPVS() throws {
        let dir = TestSupport.fixtures.appendingPathComponent("example")
        let args = TestSupport.fixtureArgs(dir)
        let all = try TestSupport.kuberules(["render", "--backend", "ipvs"] + args)
        XCTAssertEqual(all.status, 0, all.stderr)
        var joined = ""
        for (section, separator) in [("ipvsadm", "# --- ipvsadm -R ---"), ("ipset", "# --- ipset restore ---"), ("iptables", "# --- iptables-restore ---")] {
            let r = try TestSupport.kuberules(["render", "--backend", "ipvs", "--section", section] + args)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertFalse(r.stdout.contains("# --- "))
            joined += separator + "\n" + r.stdout
        }
        XCTAssertEqual(joined, all.stdout)
        XCTAssertEqual(try TestSupport.kuberules(["render", "--section", "ipset"] + args).status, 2, "--section needs --backend ipvs")

        guard !FileManager.default.fileExists(atPath: "/proc/net/ip_vs") else { return }
        for command in [["apply"], ["apply", "--dry-run"], ["diff"]] {
            let r = try TestSupport.kuberules(command + ["--backend", "ipvs"] + args)
            XCTAssertEqual(r.status, 3, "\(command): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("IPVS is not available in this kernel"), r.stderr)
        }
    }
}
