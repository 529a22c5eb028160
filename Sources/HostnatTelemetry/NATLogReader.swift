#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// One line of a NAT log file: a Cloud NAT-style entry or a "skipped" line of the rate limit.
public struct NATLogLine: Sendable, Hashable {
  /// As written (RFC 3339, UTC, milliseconds); "" when absent.
  public var timestamp: String
  public var value: JSONValue
  /// The line as read, for `--format json`.
  public var raw: String
  /// The file it came from.
  public var source: String

  /// Number of entries this line says were skipped by the rate limit, or nil for a log entry.
  public var skipped: Int? {
    guard case .number(let n)? = value[path: "skipped"] else { return nil }
    return Int(n)
  }
}

/// A bad filter expression; the description names the problem.
public struct NATLogFilterError: Error, Sendable, Hashable, CustomStringConvertible {
  public var description: String
}

/// A filter in the style of `gcloud logging read`: terms `FIELD OP VALUE` joined with ` AND `.
/// Operators: `=` (equal), `!=` (not equal, also true when the field is absent), `:` (contains,
/// case-insensitive), and `<`, `<=`, `>`, `>=` (numeric when both sides are numbers, else by text,
/// which orders RFC 3339 timestamps). Values may be double-quoted. Fields are the leaf paths of
/// the entries this module writes (see `knownFields`); any other path is an error, so a typo cannot
/// silently match nothing.
public struct NATLogFilter: Sendable, Hashable {
  public enum Op: String, Sendable, Hashable { case eq = "=", ne = "!=", has = ":", lt = "<", le = "<=", gt = ">", ge = ">=" }
  public struct Term: Sendable, Hashable {
    public var field: String
    public var op: Op
    public var value: String
  }

  public static let knownFields: [String] = [
    "timestamp",
    "jsonPayload.connection.src_ip", "jsonPayload.connection.src_port",
    "jsonPayload.connection.dest_ip", "jsonPayload.connection.dest_port",
    "jsonPayload.connection.protocol",
    "jsonPayload.connection.nat_ip", "jsonPayload.connection.nat_port",
    "jsonPayload.allocation_status", "jsonPayload.drop_reason",
    "jsonPayload.gateway_identifiers.gateway_name", "jsonPayload.gateway_identifiers.router_name",
    "jsonPayload.gateway_identifiers.region",
    "jsonPayload.endpoint.vm_name", "jsonPayload.endpoint.host",
    "jsonPayload.vpc.vpc_name", "jsonPayload.vpc.subnetwork_name",
    "skipped", "reason", "from", "to",
  ]

  public var terms: [Term]

  /// Parses `expression`; an empty expression matches everything.
  public init(_ expression: String) throws(NATLogFilterError) {
    terms = try Self.parse(Array(expression.unicodeScalars))
  }

  public func matches(_ value: JSONValue) -> Bool {
    terms.allSatisfy { term in
      guard let v = value[path: term.field], v != .null else { return term.op == .ne }
      let text = v.text
      switch term.op {
      case .eq: return text == term.value
      case .ne: return text != term.value
      case .has: return text.lowercased().contains(term.value.lowercased())
      case .lt, .le, .gt, .ge:
        let order: Int
        if case .number(let n) = v, let w = Double(term.value) {
          order = n < w ? -1 : (n > w ? 1 : 0)
        } else {
          order = text < term.value ? -1 : (text > term.value ? 1 : 0)
        }
        switch term.op {
        case .lt: return order < 0
        case .le: return order <= 0
        case .gt: return order > 0
        default: return order >= 0
        }
      }
    }
  }

  static func parse(_ s: [Unicode.Scalar]) throws(NATLogFilterError) -> [Term] {
    var i = 0
    var terms: [Term] = []
    func fail(_ why: String) -> NATLogFilterError { NATLogFilterError(description: "bad filter: \(why)") }
    func skipSpaces() { while i < s.count, s[i] == " " || s[i] == "\t" { i += 1 } }
    func isFieldChar(_ c: Unicode.Scalar) -> Bool {
      c == "_" || c == "." || (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9")
    }
    skipSpaces()
    if i == s.count { return [] }
    while true {
      let start = i
      while i < s.count, isFieldChar(s[i]) { i += 1 }
      let field = String(String.UnicodeScalarView(s[start..<i]))
      if field.isEmpty {
        throw fail(i < s.count ? "expected a field name at position \(i + 1), found '\(s[i])'" : "expected a field name at the end")
      }
      if field == "OR" || field == "NOT" { throw fail("\(field) is not supported; join terms with AND") }
      guard knownFields.contains(field) else {
        throw fail("unknown field '\(field)'; fields are: \(knownFields.joined(separator: ", "))")
      }
      skipSpaces()
      let op: Op
      guard i < s.count else { throw fail("missing operator after '\(field)' (use =, !=, :, <, <=, >, >=)") }
      let two = i + 1 < s.count ? String(String.UnicodeScalarView([s[i], s[i + 1]])) : ""
      if let o = Op(rawValue: two), two.count == 2 {
        op = o
        i += 2
      } else if let o = Op(rawValue: String(s[i])), s[i] != "!" {
        op = o
        i += 1
      } else {
        throw fail("missing operator after '\(field)' (use =, !=, :, <, <=, >, >=), found '\(s[i])'")
      }
      skipSpaces()
      var value = ""
      if i < s.count, s[i] == "\"" {
        i += 1
        var closed = false
        while i < s.count {
          if s[i] == "\\", i + 1 < s.count {
            value.unicodeScalars.append(s[i + 1])
            i += 2
          } else if s[i] == "\"" {
            closed = true
            i += 1
            break
          } else {
            value.unicodeScalars.append(s[i])
            i += 1
          }
        }
        if !closed { throw fail("unterminated quoted value for '\(field)'") }
      } else {
        while i < s.count, s[i] != " ", s[i] != "\t" {
          value.unicodeScalars.append(s[i])
          i += 1
        }
        if value.isEmpty { throw fail("missing value after '\(field)\(op.rawValue)'") }
      }
      terms.append(Term(field: field, op: op, value: value))
      skipSpaces()
      if i == s.count { return terms }
      let wordStart = i
      while i < s.count, s[i] != " ", s[i] != "\t" { i += 1 }
      let word = String(String.UnicodeScalarView(s[wordStart..<i]))
      guard word == "AND" else {
        if word == "OR" || word == "NOT" { throw fail("\(word) is not supported; join terms with AND") }
        if word.uppercased() == "AND" { throw fail("write AND in capitals") }
        throw fail("expected AND after '\(field)\(op.rawValue)\(value)', found '\(word)'")
      }
      skipSpaces()
      if i == s.count { throw fail("expected a term after AND") }
    }
  }
}

/// What `NATLogReader.read` found.
public struct NATLogReadResult: Sendable {
  /// Matching lines in the requested order, at most `limit`.
  public var lines: [NATLogLine]
  /// Lines that were not JSON objects (a torn last line, a foreign file).
  public var malformed: Int
  /// Files that did not exist (an agent with logging off).
  public var missingFiles: [String]
}

/// Reads NAT logs of several agents, as `hostnat logs read` shows them.
public enum NATLogReader {
  /// Reads `files` (and each one's rotated `FILE.1` when `includeRotated`), keeps the lines that
  /// match `filter`, sorts them by timestamp — newest first by default, like `gcloud logging read`
  /// — and returns the first `limit`.
  public static func read(
    files: [String], filter: String = "", limit: Int? = nil, newestFirst: Bool = true, includeRotated: Bool = true
  ) throws(NATLogFilterError) -> NATLogReadResult {
    let parsed = try NATLogFilter(filter)
    var all: [NATLogLine] = []
    var malformed = 0
    var missing: [String] = []
    for file in files {
      var found = false
      for path in includeRotated ? [file + ".1", file] : [file] {
        guard let data = FileManager.default.contents(atPath: path) else { continue }
        found = true
        let (lines, bad) = parse(String(decoding: data, as: UTF8.self), source: path)
        all += lines
        malformed += bad
      }
      if !found { missing.append(file) }
    }
    var kept = all.enumerated().filter { parsed.matches($0.element.value) }
    // Stable: equal timestamps keep file order.
    kept.sort { a, b in
      if a.element.timestamp != b.element.timestamp {
        return newestFirst ? a.element.timestamp > b.element.timestamp : a.element.timestamp < b.element.timestamp
      }
      return a.offset < b.offset
    }
    var lines = kept.map(\.element)
    if let limit { lines = Array(lines.prefix(max(0, limit))) }
    return NATLogReadResult(lines: lines, malformed: malformed, missingFiles: missing)
  }

  /// Parses JSON lines; blank lines are ignored, anything else that is not a JSON object is counted.
  public static func parse(_ text: String, source: String) -> (lines: [NATLogLine], malformed: Int) {
    var out: [NATLogLine] = []
    var bad = 0
    for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
      if line.allSatisfy({ $0 == " " || $0 == "\r" || $0 == "\t" }) { continue }
      guard let value = try? JSONValue.parse(line), case .object = value else {
        bad += 1
        continue
      }
      let ts: String = if case .string(let t)? = value[path: "timestamp"] { t } else { "" }
      out.append(NATLogLine(timestamp: ts, value: value, raw: String(line), source: source))
    }
    return (out, bad)
  }

  public static let tableHeader = ["TIMESTAMP", "SRC", "DEST", "NAT", "STATUS"]

  /// One row per line: timestamp, src IP:port, dest IP:port, NAT IP:port, status (with the drop
  /// reason, or how many entries the rate limit skipped).
  public static func tableRows(_ lines: [NATLogLine]) -> [[String]] {
    lines.map { l in
      if let n = l.skipped {
        let from = l.value[path: "from"]?.text ?? "?"
        let to = l.value[path: "to"]?.text ?? "?"
        return [l.timestamp, "-", "-", "-", "SKIPPED \(n) (\(l.value[path: "reason"]?.text ?? "rate limit"), \(from) .. \(to))"]
      }
      func endpoint(_ ip: String, _ port: String) -> String {
        guard let a = l.value[path: "jsonPayload.connection.\(ip)"]?.text else { return "-" }
        guard let p = l.value[path: "jsonPayload.connection.\(port)"]?.text else { return a }
        return "\(a):\(p)"
      }
      var status = l.value[path: "jsonPayload.allocation_status"]?.text ?? "?"
      if let reason = l.value[path: "jsonPayload.drop_reason"]?.text { status += " \(reason)" }
      return [l.timestamp, endpoint("src_ip", "src_port"), endpoint("dest_ip", "dest_port"), endpoint("nat_ip", "nat_port"), status]
    }
  }

  /// The rows under a header, columns padded to their widest cell.
  public static func table(_ lines: [NATLogLine]) -> String {
    let rows = [tableHeader] + tableRows(lines)
    var widths = [Int](repeating: 0, count: tableHeader.count)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    return rows.map { r in
      r.enumerated().map { i, c in i == r.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count) }
        .joined(separator: "  ")
    }.joined(separator: "\n") + "\n"
  }

  /// The lines as written, one JSON object per line.
  public static func json(_ lines: [NATLogLine]) -> String {
    lines.map { $0.raw + "\n" }.joined()
  }
}
