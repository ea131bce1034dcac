import IpvsModel

/// ipset state as `ipset save` prints it, and the `ipset restore` script that reaches the desired sets.
public enum IpsetDiff {
    /// Set name → entries, for the sets `ipset save` lists (entries in ipset's own notation).
    public static func parseSave(_ text: String) -> [String: Set<String>] {
        var out = [String: Set<String>]()
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 2 else { continue }
            if f[0] == "create" { out[String(f[1]), default: []] = out[String(f[1])] ?? [] }
            if f[0] == "add", f.count >= 3 { out[String(f[1]), default: []].insert(String(f[2])) }
        }
        return out
    }

    /// ipset prints host networks without their prefix (`…,10.0.0.5` for `…,10.0.0.5/32`).
    static func normalized(_ entry: String) -> String {
        for suffix in ["/32", "/128"] where entry.hasSuffix(suffix) { return String(entry.dropLast(suffix.count)) }
        return entry
    }

    public struct Script: Sendable {
        public var text: String
        public var createdSets: [String]
        public var added: Int
        public var removed: Int
        /// One line per change, for `diff` / `--dry-run`.
        public var listing: [String]
        public var isEmpty: Bool { createdSets.isEmpty && added == 0 && removed == 0 }
    }

    /// `create … -exist` for every desired set, `add … -exist` for missing entries, `del` for
    /// entries no longer wanted (only in our sets).
    public static func script(desired: [Ipset], current: [String: Set<String>]) -> Script {
        var text = "", listing = [String](), created = [String]()
        var added = 0, removed = 0
        for s in desired {
            text += s.createLine + "\n"
            if current[s.name] == nil { created.append(s.name); listing.append(s.createLine) }
        }
        for s in desired {
            let have = current[s.name] ?? []
            let want = Set(s.entries.map(normalized))
            for e in s.entries where !have.contains(normalized(e)) {
                text += "add \(s.name) \(e) -exist\n"; listing.append("add \(s.name) \(e)"); added += 1
            }
            for e in have.subtracting(want).sorted() {
                text += "del \(s.name) \(e) -exist\n"; listing.append("del \(s.name) \(e)"); removed += 1
            }
        }
        return Script(text: text, createdSets: created, added: added, removed: removed, listing: listing)
    }
}
