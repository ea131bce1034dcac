/// A unified diff (3 lines of context) built on the standard library's CollectionDifference.
enum UnifiedDiff {
    static func diff(_ old: String, _ new: String, fromLabel: String, toLabel: String, context: Int = 3) -> String {
        let a = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let d = b.difference(from: a)
        var removed = Set<Int>(), inserted = Set<Int>()
        for c in d {
            switch c {
            case .remove(let o, _, _): removed.insert(o)
            case .insert(let o, _, _): inserted.insert(o)
            }
        }
        // Walk both sides, producing (kind, text, aIndex, bIndex) lines.
        enum Kind { case same, del, add }
        var lines = [(Kind, String, Int, Int)]()
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if i < a.count && removed.contains(i) { lines.append((.del, a[i], i, j)); i += 1; continue }
            if j < b.count && inserted.contains(j) { lines.append((.add, b[j], i, j)); j += 1; continue }
            if i < a.count && j < b.count { lines.append((.same, a[i], i, j)); i += 1; j += 1; continue }
            break
        }
        var out = "--- \(fromLabel)\n+++ \(toLabel)\n"
        var k = 0
        while k < lines.count {
            guard lines[k].0 != .same else { k += 1; continue }
            let start = max(0, k - context)
            var end = k
            var lastChange = k
            while end < lines.count {
                if lines[end].0 != .same { lastChange = end }
                if end - lastChange > 2 * context { break }
                end += 1
            }
            end = min(lines.count, lastChange + context + 1)
            let hunk = lines[start..<end]
            let aStart = hunk.first!.2, bStart = hunk.first!.3
            let aLen = hunk.filter { $0.0 != .add }.count, bLen = hunk.filter { $0.0 != .del }.count
            out += "@@ -\(aLen == 0 ? aStart : aStart + 1),\(aLen) +\(bLen == 0 ? bStart : bStart + 1),\(bLen) @@\n"
            for l in hunk {
                switch l.0 {
                case .same: out += " \(l.1)\n"
                case .del: out += "-\(l.1)\n"
                case .add: out += "+\(l.1)\n"
                }
            }
            k = end
        }
        return out
    }
}
