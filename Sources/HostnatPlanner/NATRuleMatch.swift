import HostnatAddressing

// The match expressions of NAT rules. Cloud NAT takes a CEL expression but documents only a small
// subset for Public NAT rules: equality with one destination address and `inIpRange` over
// destination ranges, joined with `||`. Everything that subset can say is a set of destination
// prefixes, so the planner compiles it to exactly that and refuses anything else with the position
// of the first offending token, rather than accepting an expression it would evaluate differently
// from Cloud NAT.

/// Why a match expression was refused. `position` is the 0-based offset (in Unicode scalars,
/// i.e. characters for ASCII text) of the offending token; `reason` is the whole operator-facing
/// text, position included, e.g. `unexpected "&&" at 24: only || is supported`.
public struct NATRuleMatchError: Error, CustomStringConvertible, Hashable, Sendable {
  public var position: Int
  public var reason: String

  public init(position: Int, reason: String) {
    self.position = position
    self.reason = reason
  }

  public var description: String { reason }
}

/// Compiles NAT rule match expressions.
public enum NATRuleMatch {
  /// The destination prefixes `match` selects, as normalized CIDR strings ("203.0.113.7/32",
  /// "203.0.113.0/28"), sorted by address then prefix length, without duplicates.
  ///
  /// Accepted: `destination.ip == "a.b.c.d"` and `inIpRange(destination.ip, "a.b.c.d/n")`
  /// (either quote style, as in CEL), joined with `||`, with optional parentheses and whitespace.
  /// A range must have zero host bits: "203.0.113.1/28" is almost always a typo for a /28 or a
  /// /32, and guessing which would send traffic through the wrong NAT IPs.
  public static func destinationRanges(_ match: String) throws(NATRuleMatchError) -> [String] {
    var parser = Parser(Array(match.unicodeScalars))
    let ranges = try parser.parse()
    var seen: Set<IPv4CIDR> = []
    return ranges.filter { seen.insert($0).inserted }
      .sorted { ($0.network, $0.prefixLength) < ($1.network, $1.prefixLength) }
      .map(\.description)
  }

  static let expectedTerm = #"expected destination.ip == "a.b.c.d" or inIpRange(destination.ip, "a.b.c.d/n")"#

  private enum Token: Equatable {
    case identifier(String)
    case string(String)
    case symbol(String)
    case end

    var text: String {
      switch self {
      case .identifier(let name): name
      case .string(let value): "\"\(value)\""
      case .symbol(let symbol): symbol
      case .end: "end of expression"
      }
    }
  }

  private struct Parser {
    let scalars: [Unicode.Scalar]
    var index = 0
    /// The current token and where it starts.
    var token: Token = .end
    var start = 0

    init(_ scalars: [Unicode.Scalar]) { self.scalars = scalars }

    static func isIdentifierScalar(_ c: Unicode.Scalar) -> Bool {
      ("0"..."9").contains(c) || ("a"..."z").contains(c) || ("A"..."Z").contains(c) || c == "_" || c == "."
    }

    func error(_ reason: String, at position: Int) -> NATRuleMatchError {
      NATRuleMatchError(position: position, reason: reason)
    }

    func unexpected(_ expected: String) -> NATRuleMatchError {
      if token == .end { return error("unexpected end of expression at \(start): \(expected)", at: start) }
      return error("unexpected \"\(token.text)\" at \(start): \(expected)", at: start)
    }

    mutating func advance() throws(NATRuleMatchError) {
      while index < scalars.count, scalars[index].properties.isWhitespace { index += 1 }
      start = index
      guard index < scalars.count else {
        token = .end
        return
      }
      let c = scalars[index]
      if c == "\"" || c == "'" {
        var value = ""
        index += 1
        while index < scalars.count, scalars[index] != c {
          value.unicodeScalars.append(scalars[index])
          index += 1
        }
        guard index < scalars.count else { throw error("unterminated string starting at \(start)", at: start) }
        index += 1
        token = .string(value)
      } else if Self.isIdentifierScalar(c) {
        var name = ""
        while index < scalars.count, Self.isIdentifierScalar(scalars[index]) {
          name.unicodeScalars.append(scalars[index])
          index += 1
        }
        token = .identifier(name)
      } else {
        // Two-character operators are read whole so that the error names "&&" rather than "&".
        let pair = index + 1 < scalars.count ? String(String.UnicodeScalarView([c, scalars[index + 1]])) : ""
        if ["||", "&&", "==", "!=", "<=", ">="].contains(pair) {
          index += 2
          token = .symbol(pair)
        } else {
          index += 1
          token = .symbol(String(c))
        }
      }
    }

    mutating func expect(_ symbol: String) throws(NATRuleMatchError) {
      guard token == .symbol(symbol) else { throw unexpected("expected \"\(symbol)\"") }
      try advance()
    }

    mutating func parse() throws(NATRuleMatchError) -> [IPv4CIDR] {
      try advance()
      if token == .end { throw error("empty match expression: \(NATRuleMatch.expectedTerm)", at: 0) }
      let ranges = try disjunction()
      // `disjunction()` has already refused "&&".
      guard token == .end else {
        if token == .symbol(")") { throw unexpected("no matching \"(\"") }
        throw unexpected("expected || or the end of the expression")
      }
      return ranges
    }

    mutating func disjunction() throws(NATRuleMatchError) -> [IPv4CIDR] {
      var ranges = try term()
      while true {
        if token == .symbol("&&") { throw unexpected("only || is supported") }
        guard token == .symbol("||") else { return ranges }
        try advance()
        ranges += try term()
      }
    }

    mutating func term() throws(NATRuleMatchError) -> [IPv4CIDR] {
      switch token {
      case .symbol("("):
        try advance()
        let ranges = try disjunction()
        guard token == .symbol(")") else { throw unexpected("expected \")\" or ||") }
        try advance()
        return ranges
      case .identifier("destination.ip"):
        try advance()
        guard token == .symbol("==") else { throw unexpected("only == is supported after destination.ip") }
        try advance()
        guard case .string(let text) = token else { throw unexpected("expected a quoted IPv4 address") }
        guard let address = IPv4Address(text) else {
          let hint = text.contains("/") ? " (use inIpRange(destination.ip, \"\(text)\") for a range)" : ""
          throw error("\"\(text)\" at \(start) is not an IPv4 address a.b.c.d\(hint)", at: start)
        }
        try advance()
        return [IPv4CIDR(strict: address, prefixLength: 32)!]
      case .identifier("inIpRange"):
        try advance()
        try expect("(")
        guard token == .identifier("destination.ip") else { throw unexpected("inIpRange can only test destination.ip") }
        try advance()
        try expect(",")
        guard case .string(let text) = token else { throw unexpected("expected a quoted IPv4 range \"a.b.c.d/n\"") }
        let cidr = try range(text, at: start)
        try advance()
        try expect(")")
        return [cidr]
      case .end:
        throw unexpected(NATRuleMatch.expectedTerm)
      default:
        if token == .symbol("&&") { throw unexpected("only || is supported") }
        throw unexpected(NATRuleMatch.expectedTerm)
      }
    }

    func range(_ text: String, at position: Int) throws(NATRuleMatchError) -> IPv4CIDR {
      if let cidr = IPv4CIDR(strict: text) { return cidr }
      // Say why: a well-formed prefix with host bits set gets the range it probably meant.
      let parts = text.split(separator: "/", omittingEmptySubsequences: false)
      if parts.count == 2, let address = IPv4Address(parts[0]), parts[1].allSatisfy(\.isASCII), let length = Int(parts[1]),
        (0...32).contains(length)
      {
        let network = IPv4CIDR(strict: IPv4Address(address.value & IPv4CIDR.mask(length)), prefixLength: length)!
        throw error("\"\(text)\" at \(position) has host bits set (did you mean \"\(network)\"?)", at: position)
      }
      throw error("\"\(text)\" at \(position) is not an IPv4 range a.b.c.d/n", at: position)
    }
  }
}
