import Foundation
import SwiftProtobuf
import Yams

/// How a command prints its result (gcloud's `--format`).
public enum OutputFormat: String, CaseIterable, Sendable {
  case table, json, yaml
}

/// A JSON value, decoded from protobuf JSON so that json and yaml output are the same data.
/// Objects keep keys sorted (gcloud sorts keys too), so output is deterministic.
indirect enum JSONValue: Decodable, Sendable {
  case null
  case bool(Bool)
  case int(Int64)
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  init(from decoder: any Swift.Decoder) throws {
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let value = try? container.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? container.decode(Int64.self) {
      self = .int(value)
    } else if let value = try? container.decode(Double.self) {
      self = .double(value)
    } else if let value = try? container.decode(String.self) {
      self = .string(value)
    } else if let value = try? container.decode([JSONValue].self) {
      self = .array(value)
    } else {
      self = .object(try container.decode([String: JSONValue].self))
    }
  }

  /// Protobuf JSON of a message (gcloud field names: the proto's lowerCamelCase JSON names),
  /// with `defaults` filled in for fields that protobuf JSON omits when zero but gcloud shows.
  static func message(_ message: some SwiftProtobuf.Message, defaults: [String: JSONValue] = [:]) -> JSONValue {
    let text = (try? message.jsonString()) ?? "{}"
    var value = (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .object([:])
    if case .object(var fields) = value {
      for (key, fallback) in defaults where fields[key] == nil { fields[key] = fallback }
      value = .object(fields)
    }
    return value
  }

  /// Pretty JSON with two-space indents and sorted keys, as gcloud prints it.
  func json(indent: Int = 0) -> String {
    let pad = String(repeating: " ", count: indent + 2)
    let close = String(repeating: " ", count: indent)
    switch self {
    case .null: return "null"
    case .bool(let value): return value ? "true" : "false"
    case .int(let value): return String(value)
    case .double(let value): return String(value)
    case .string(let value): return Self.quoted(value)
    case .array(let values):
      if values.isEmpty { return "[]" }
      return "[\n" + values.map { pad + $0.json(indent: indent + 2) }.joined(separator: ",\n") + "\n" + close + "]"
    case .object(let fields):
      if fields.isEmpty { return "{}" }
      let items = fields.sorted { $0.key < $1.key }.map { pad + Self.quoted($0.key) + ": " + $0.value.json(indent: indent + 2) }
      return "{\n" + items.joined(separator: ",\n") + "\n" + close + "}"
    }
  }

  static func quoted(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": result += "\\\""
      case "\\": result += "\\\\"
      case "\n": result += "\\n"
      case "\r": result += "\\r"
      case "\t": result += "\\t"
      default:
        if scalar.value < 0x20 {
          result += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
        } else {
          result.unicodeScalars.append(scalar)
        }
      }
    }
    return result + "\""
  }

  func yamlNode() -> Node {
    switch self {
    case .null: return Node("null", Tag(.null))
    case .bool(let value): return Node(value ? "true" : "false", Tag(.bool))
    case .int(let value): return Node(String(value), Tag(.int))
    case .double(let value): return Node(String(value), Tag(.float))
    case .string(let value): return .scalar(value.represented())
    case .array(let values): return .sequence(Node.Sequence(values.map { $0.yamlNode() }))
    case .object(let fields):
      return .mapping(Node.Mapping(fields.sorted { $0.key < $1.key }.map { (Node($0.key), $0.value.yamlNode()) }))
    }
  }

  func yaml() -> String {
    (try? Yams.serialize(node: yamlNode())) ?? ""
  }
}

/// Aligned columns, like gcloud's list tables. Cells longer than `maxCell` are cut with "…"
/// so a row stays readable in 80 columns; lists are joined with ",".
struct Table {
  var headers: [String]
  var rows: [[String]] = []
  var maxCell = 40

  init(_ headers: [String]) { self.headers = headers }

  mutating func add(_ row: [String]) { rows.append(row) }

  func render() -> String {
    let cut = rows.map { row in
      row.map { cell in cell.count > maxCell ? String(cell.prefix(maxCell - 1)) + "…" : cell }
    }
    var widths = headers.map(\.count)
    for row in cut {
      for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
    }
    func line(_ cells: [String]) -> String {
      var text = ""
      for (index, cell) in cells.enumerated() {
        if index == cells.count - 1 {
          text += cell
        } else {
          text += cell.padding(toLength: widths[index] + 2, withPad: " ", startingAt: 0)
        }
      }
      return text
    }
    return ([line(headers)] + cut.map(line)).joined(separator: "\n") + "\n"
  }
}

/// Key/value rendering of one object for `--format table` on describe-like commands.
func keyValueTable(_ pairs: [(String, String)]) -> String {
  let width = pairs.map(\.0.count).max() ?? 0
  return pairs.map { "\($0.0.padding(toLength: width, withPad: " ", startingAt: 0))  \($0.1)" }.joined(separator: "\n") + "\n"
}

func list(_ values: [String]) -> String { values.joined(separator: ",") }

/// Writes to stdout or stderr without buffering surprises (the lab parses our output).
enum Console {
  static func out(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
  }

  static func err(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
  }
}

/// Prints a result in the chosen format: `table` builds the table from the messages, json and
/// yaml show the protobuf JSON.
func emit(_ value: JSONValue, format: OutputFormat, table: () -> String) {
  switch format {
  case .json: Console.out(value.json() + "\n")
  case .yaml: Console.out(value.yaml())
  case .table: Console.out(table())
  }
}
