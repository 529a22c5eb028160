import Foundation
import Glibc
public import SwiftProtobuf
import Synchronization

/// Which way a traced message went, seen from the process that wrote the trace.
public enum TraceDirection: String, Codable, Sendable {
  case sent, received
}

/// One line of a control trace file: a control message with where and when it went. The
/// message itself is in protobuf's canonical JSON form, so the file reads without hostnat's
/// code and any protobuf tool can decode it again.
public struct TraceRecord: Sendable {
  /// Unix milliseconds when the message was handed to, or taken from, the stream.
  public var ms: Int64
  /// Who wrote the trace: "controller", "agent", "edge" or "replay".
  public var side: String
  /// The writer's own name: the host id for agents and edges, the listen address for a controller.
  public var selfName: String
  public var direction: TraceDirection
  /// The other end: a host id (as the controller knows it) or the controller's address.
  public var peer: String
  /// The writer's number for the stream (1, 2, … in order of opening): a reconnect starts a new one.
  public var stream: UInt64
  /// Full protobuf name of the message, e.g. `hostnat.v1.ControllerMessage`.
  public var proto: String
  /// The oneof case the message carries (`hello`, `push`, `ack`, …).
  public var type: String
  /// The message as protobuf JSON.
  public var json: String

  public init(ms: Int64, side: String, selfName: String, direction: TraceDirection, peer: String, stream: UInt64, proto: String, type: String, json: String) {
    self.ms = ms
    self.side = side
    self.selfName = selfName
    self.direction = direction
    self.peer = peer
    self.stream = stream
    self.proto = proto
    self.type = type
    self.json = json
  }

  /// Whether the controller wrote the message (as opposed to a host or edge).
  public var fromController: Bool {
    proto == "hostnat.v1.ControllerMessage" || proto == "hostnat.v1.EdgeControllerMessage"
  }
}

/// Why a trace could not be opened or read.
public struct TraceError: Error, CustomStringConvertible, Sendable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// Writes every control message a process sends and receives as a JSON line
/// (`--trace-control FILE`). Control traffic is a few messages a second, so each line is one
/// `write(2)` under a lock: a line is whole in the file as soon as the call returns, even if the
/// process is killed right after.
public final class ControlTrace: Sendable {
  public let path: String
  public let side: String
  public let selfName: String
  private let state: Mutex<(fd: Int32, streams: UInt64, written: UInt64, failed: UInt64)>
  private let clock: @Sendable () -> Int64

  public init(path: String, side: String, selfName: String, clock: (@Sendable () -> Int64)? = nil) throws(TraceError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      throw TraceError("cannot open \(path): \(String(cString: strerror(errno)))")
    }
    self.path = path
    self.side = side
    self.selfName = selfName
    self.clock = clock ?? { Int64(Date().timeIntervalSince1970 * 1000) }
    state = Mutex((fd, 0, 0, 0))
  }

  deinit { state.withLock { if $0.fd >= 0 { _ = Glibc.close($0.fd) } } }

  /// A number for a newly opened stream.
  public func nextStream() -> UInt64 { state.withLock { $0.streams += 1; return $0.streams } }

  /// Lines written and lines lost to write errors.
  public var counts: (written: UInt64, failed: UInt64) { state.withLock { ($0.written, $0.failed) } }

  public func record(_ direction: TraceDirection, peer: String, stream: UInt64, _ message: some SwiftProtobuf.Message) {
    let json = (try? message.jsonString()) ?? "{}"
    let record = TraceRecord(
      ms: clock(), side: side, selfName: selfName, direction: direction, peer: peer, stream: stream,
      proto: type(of: message).protoMessageName, type: Self.caseName(json), json: json)
    let line = Array(TraceCodec.line(record).utf8)
    state.withLock { s in
      guard s.fd >= 0 else { return }
      let n = line.withUnsafeBytes { write(s.fd, $0.baseAddress, $0.count) }
      if n == line.count { s.written += 1 } else { s.failed += 1 }
    }
  }

  public func close() {
    state.withLock { s in
      if s.fd >= 0 { _ = Glibc.close(s.fd) }
      s.fd = -1
    }
  }

  /// The oneof case of a control message is the only key of its JSON form.
  static func caseName(_ json: String) -> String {
    guard let open = json.firstIndex(of: "\""), let close = json[json.index(after: open)...].firstIndex(of: "\"") else {
      return "empty"
    }
    return String(json[json.index(after: open)..<close])
  }
}

/// The trace file format: one JSON object per line.
///
/// `{"ms":…,"time":"…Z","side":"agent","self":"host-a","direction":"sent","peer":"127.0.0.1:7400","stream":1,"proto":"hostnat.v1.AgentMessage","type":"hello","message":{…}}`
public enum TraceCodec {
  public static func line(_ r: TraceRecord) -> String {
    "{\"ms\":\(r.ms),\"time\":\(quote(iso(r.ms))),\"side\":\(quote(r.side)),\"self\":\(quote(r.selfName)),\"direction\":\"\(r.direction.rawValue)\",\"peer\":\(quote(r.peer)),\"stream\":\(r.stream),\"proto\":\(quote(r.proto)),\"type\":\(quote(r.type)),\"message\":\(r.json)}\n"
  }

  /// Reads a trace file; a line that is not a trace record is an error naming the line, since a
  /// half-understood trace would make a replay or a reading silently wrong.
  public static func read(path: String) throws(TraceError) -> [TraceRecord] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw TraceError("\(path): cannot read the file")
    }
    var records: [TraceRecord] = []
    var number = 0
    for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
      number += 1
      if line.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) { continue }
      do {
        records.append(try parse(Data(line)))
      } catch {
        throw TraceError("\(path):\(number): \(error.description)")
      }
    }
    return records
  }

  static func parse(_ line: Data) throws(TraceError) -> TraceRecord {
    let object: [String: Any]
    do {
      guard let parsed = try JSONSerialization.jsonObject(with: line) as? [String: Any] else {
        throw TraceError("not a JSON object")
      }
      object = parsed
    } catch let error as TraceError {
      throw error
    } catch {
      throw TraceError("not JSON")
    }
    func string(_ key: String) throws(TraceError) -> String {
      guard let value = object[key] as? String else { throw TraceError("\"\(key)\": missing or not a string") }
      return value
    }
    guard let ms = (object["ms"] as? NSNumber)?.int64Value else { throw TraceError("\"ms\": missing or not a number") }
    guard let stream = (object["stream"] as? NSNumber)?.uint64Value else { throw TraceError("\"stream\": missing or not a number") }
    guard let direction = TraceDirection(rawValue: try string("direction")) else {
      throw TraceError("\"direction\": must be \"sent\" or \"received\"")
    }
    guard let message = object["message"], JSONSerialization.isValidJSONObject(message),
      let json = try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys])
    else { throw TraceError("\"message\": missing or not an object") }
    return TraceRecord(
      ms: ms, side: try string("side"), selfName: try string("self"), direction: direction, peer: try string("peer"),
      stream: stream, proto: try string("proto"), type: try string("type"), json: String(decoding: json, as: UTF8.self))
  }

  static func quote(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
      default: out.unicodeScalars.append(scalar)
      }
    }
    return out + "\""
  }

  static func iso(_ ms: Int64) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
  }
}
