/// One problem found in the input: which file, which object, which field, what is wrong.
public struct Diagnostic: Sendable, Hashable, CustomStringConvertible {
    public enum Severity: Sendable, Hashable { case error, warning, note }
    public var severity: Severity
    public var file: String
    /// `1`-based line, or 0 when unknown. Shown only for syntax errors.
    public var line: Int
    /// e.g. "Service shop/web"; empty for file-level problems.
    public var object: String
    /// e.g. "spec.ports[1].port"; empty for object-level problems.
    public var field: String
    public var message: String

    public init(_ severity: Severity = .error, file: String, line: Int = 0, object: String = "", field: String = "", message: String) {
        self.severity = severity; self.file = file; self.line = line
        self.object = object; self.field = field; self.message = message
    }

    /// `cluster.yaml: Service shop/web: spec.ports[1].port: 70000 is not a valid port (1-65535)`
    public var description: String {
        var s = file
        if line > 0 && object.isEmpty { s += ":\(line)" }
        s += ": "
        if !object.isEmpty { s += object + ": " }
        if !field.isEmpty { s += field + ": " }
        s += message
        return s
    }
}

/// Thrown when input is invalid; carries every problem found, not just the first.
public struct InputError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]
    public init(_ diagnostics: [Diagnostic]) { self.diagnostics = diagnostics }
    public init(file: String, message: String) { diagnostics = [Diagnostic(file: file, message: message)] }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}
