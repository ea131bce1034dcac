import Crypto
import KubeModel

/// `NAMESPACE/NAME:PORTNAME`, or `NAMESPACE/NAME` for an unnamed port.
public struct ServicePortName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var name: String
    public var port: String
    public let description: String

    public init(namespace: String, name: String, port: String) {
        self.namespace = namespace; self.name = name; self.port = port
        description = port.isEmpty ? "\(namespace)/\(name)" : "\(namespace)/\(name):\(port)"
    }

    public static func < (a: ServicePortName, b: ServicePortName) -> Bool { a.description < b.description }
}

public enum ChainHash {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    /// RFC 4648 base32 of sha256(text), first `count` characters (count <= 16 uses 10 bytes).
    public static func base32SHA256(_ text: String, count: Int = 16) -> String {
        var h = SHA256()
        update(&h, text)
        return base32(h.finalize(), count: count)
    }

    /// The first 8 bytes of sha256(text) as two big-endian 32-bit words.
    public static func sha256Words(_ text: String) -> (UInt32, UInt32) {
        var h = SHA256()
        update(&h, text)
        return h.finalize().withUnsafeBytes { d in
            (UInt32(d[0]) << 24 | UInt32(d[1]) << 16 | UInt32(d[2]) << 8 | UInt32(d[3]),
             UInt32(d[4]) << 24 | UInt32(d[5]) << 16 | UInt32(d[6]) << 8 | UInt32(d[7]))
        }
    }

    /// The text's UTF-8 bytes into the hash (no concatenated String per chain name).
    private static func update(_ h: inout SHA256, _ text: String) {
        var text = text
        text.withUTF8 { h.update(bufferPointer: UnsafeRawBufferPointer($0)) }
    }

    private static func base32(_ digest: SHA256.Digest, count: Int) -> String {
        digest.withUnsafeBytes { d -> String in
            String(unsafeUninitializedCapacity: count) { out -> Int in
                var buffer: UInt64 = 0, bits = 0, i = 0
                for k in 0..<count {
                    if bits < 5 {
                        buffer = (buffer << 8) | UInt64(d[i]); i += 1; bits += 8
                    }
                    out[k] = alphabet[Int((buffer >> UInt64(bits - 5)) & 31)]
                    bits -= 5
                }
                return count
            }
        }
    }

    /// The 16-character hash kube-proxy uses for KUBE-SVC/SVL/EXT/FW chains.
    public static func portProto(_ spn: String, _ proto: L4Protocol) -> String {
        var h = SHA256()
        update(&h, spn); update(&h, proto.lower)
        return base32(h.finalize(), count: 16)
    }

    /// The 16-character hash for a KUBE-SEP chain (`endpoint` is `IP:PORT` or `[IP]:PORT`).
    public static func endpoint(_ spn: String, _ proto: L4Protocol, _ endpoint: String) -> String {
        var h = SHA256()
        update(&h, spn); update(&h, proto.lower); update(&h, endpoint)
        return base32(h.finalize(), count: 16)
    }
}
