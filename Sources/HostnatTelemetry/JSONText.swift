#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// Small JSON helpers: log lines are written by hand (fixed key order, no Foundation on the write
/// path) and read back through `JSONDecoder` into `JSONValue`.
enum JSONText {
  /// Appends `s` as a JSON string literal (quotes included).
  static func appendString(_ s: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for b in s.utf8 {
      switch b {
      case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
      case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
      case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
      case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
      case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
      case 0..<0x20:
        let hex = Array("0123456789abcdef".utf8)
        out.append(contentsOf: Array("\\u00".utf8))
        out.append(hex[Int(b >> 4)])
        out.append(hex[Int(b & 0xF)])
      default: out.append(b)
      }
    }
    out.append(UInt8(ascii: "\""))
  }

  static func appendKey(_ key: String, to out: inout [UInt8]) {
    appendString(key, to: &out)
    out.append(UInt8(ascii: ":"))
  }
}

/// RFC 3339 timestamps in UTC with milliseconds ("2024-05-01T12:34:56.789Z"), from Unix nanoseconds.
public enum RFC3339 {
  public static func format(nanoseconds ns: UInt64) -> String {
    let ms = ns / 1_000_000
    let secs = Int64(ms / 1000)
    let millis = Int(ms % 1000)
    let days = secs / 86_400
    let rem = Int(secs % 86_400)
    let (y, m, d) = civil(fromDays: days)
    func pad(_ v: Int, _ width: Int) -> String {
      let s = String(v)
      return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
    return "\(pad(Int(y), 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(rem / 3600, 2)):\(pad(rem / 60 % 60, 2)):\(pad(rem % 60, 2)).\(pad(millis, 3))Z"
  }

  /// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
  static func civil(fromDays z0: Int64) -> (Int64, Int, Int) {
    let z = z0 + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let y = yoe + era * 400
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = Int(doy - (153 * mp + 2) / 5 + 1)
    let m = Int(mp < 10 ? mp + 3 : mp - 9)
    return (m <= 2 ? y + 1 : y, m, d)
  }
}

/// A parsed JSON value, as read back from a log file.
public enum JSONValue: Sendable, Hashable, Decodable {
  case string(String)
  case number(Double)
  case bool(Bool)
  case null
  case array([JSONValue])
  case object([String: JSONValue])

  public init(from decoder: any Decoder) throws {
    let c = try decoder.singleValueContainer()
    if c.decodeNil() {
      self = .null
    } else if let b = try? c.decode(Bool.self) {
      self = .bool(b)
    } else if let n = try? c.decode(Double.self) {
      self = .number(n)
    } else if let s = try? c.decode(String.self) {
      self = .string(s)
    } else if let a = try? c.decode([JSONValue].self) {
      self = .array(a)
    } else {
      self = .object(try c.decode([String: JSONValue].self))
    }
  }

  /// Parses one JSON document.
  public static func parse(_ text: some StringProtocol) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: Data(String(text).utf8))
  }

  /// The value at a dotted path ("jsonPayload.connection.dest_ip"), or nil.
  public subscript(path path: some StringProtocol) -> JSONValue? {
    var cur: JSONValue? = self
    for part in path.split(separator: ".", omittingEmptySubsequences: false) {
      guard case .object(let o)? = cur else { return nil }
      cur = o[String(part)]
    }
    return cur
  }

  /// Text form used for filtering and tables: strings bare, integral numbers without ".0".
  public var text: String {
    switch self {
    case .string(let s): return s
    case .number(let n):
      if n.rounded() == n, abs(n) < 1e15 { return String(Int64(n)) }
      return String(n)
    case .bool(let b): return b ? "true" : "false"
    case .null: return "null"
    case .array, .object: return "\(self)"
    }
  }
}
