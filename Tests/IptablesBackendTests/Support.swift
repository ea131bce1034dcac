import Foundation
import XCTest

/// Paths and process helpers shared by the CLI and golden tests.
enum TestSupport {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = packageRoot.appendingPathComponent("Fixtures")

    /// The `kuberules` binary next to the test bundle (`swift build --build-tests` builds both).
    static var binary: URL {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for candidate in [dir, dir.deletingLastPathComponent()] {
            let b = candidate.appendingPathComponent("kuberules")
            if FileManager.default.isExecutableFile(atPath: b.path) { return b }
        }
        return packageRoot.appendingPathComponent(".build/debug/kuberules")
    }

    struct Result { var status: Int32; var stdout: String; var stderr: String }

    static func run(_ executable: String, _ args: [String], stdin: Data? = nil, env: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        var environment = ProcessInfo.processInfo.environment
        for (k, v) in env { environment[k] = v }
        p.environment = environment
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out; p.standardError = err; p.standardInput = inp
        try p.run()
        if let stdin { inp.fileHandleForWriting.write(stdin) }
        try? inp.fileHandleForWriting.close()
        // Read both pipes concurrently so a large output cannot block the child.
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let errData = errBox.data
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    static func kuberules(_ args: [String], stdin: Data? = nil) throws -> Result {
        try run(binary.path, args, stdin: stdin)
    }

    /// A fixture's CLI arguments: its `args` file, `--config proxy-config.yaml` if present, and its input.
    /// A Service `shop/NAME` (TCP port 80 to 8080 on `clusterIP`) with one EndpointSlice of
    /// ready endpoints at `ips`, as YAML.
    static func oneServiceCluster(_ name: String, clusterIP: String, ips: [String]) -> String {
        """
        apiVersion: v1
        kind: Service
        metadata: {name: \(name), namespace: shop}
        spec: {clusterIP: \(clusterIP), ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: \(name)-1, namespace: shop, labels: {kubernetes.io/service-name: \(name)}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints:
        \(ips.map { "- {addresses: [\($0)], conditions: {ready: true}}" }.joined(separator: "\n"))

        """
    }

    static func fixtureArgs(_ dir: URL) -> [String] {
        var args = (try? String(contentsOf: dir.appendingPathComponent("args"), encoding: .utf8))?
            .split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init) ?? []
        let cfg = dir.appendingPathComponent("proxy-config.yaml")
        if FileManager.default.fileExists(atPath: cfg.path) { args += ["--config", cfg.path] }
        for name in ["cluster.yaml", "cluster.json", "cluster"] {
            let input = dir.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: input.path) { args.append(input.path); break }
        }
        return args
    }

    static var fixtureDirs: [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: fixtures.path)) ?? []
        return names.sorted().map { fixtures.appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0.appendingPathComponent("args").path) }
    }

    static var isRoot: Bool { getuid() == 0 }

    static func which(_ tool: String) -> String? {
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
            let p = dir + "/" + tool
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }
}
