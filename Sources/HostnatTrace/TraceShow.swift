import Foundation
public import HostnatProto
import SwiftProtobuf

/// The four control messages, decoded from a trace record.
public enum TracedMessage: Sendable {
  case agent(Hostnat_V1_AgentMessage)
  case controller(Hostnat_V1_ControllerMessage)
  case edge(Hostnat_V1_EdgeMessage)
  case edgeController(Hostnat_V1_EdgeControllerMessage)

  public init(_ record: TraceRecord) throws(TraceError) {
    var options = JSONDecodingOptions()
    // A trace written by a newer hostnat may carry fields this one does not know.
    options.ignoreUnknownFields = true
    do {
      switch record.proto {
      case Hostnat_V1_AgentMessage.protoMessageName: self = .agent(try .init(jsonString: record.json, options: options))
      case Hostnat_V1_ControllerMessage.protoMessageName: self = .controller(try .init(jsonString: record.json, options: options))
      case Hostnat_V1_EdgeMessage.protoMessageName: self = .edge(try .init(jsonString: record.json, options: options))
      case Hostnat_V1_EdgeControllerMessage.protoMessageName: self = .edgeController(try .init(jsonString: record.json, options: options))
      default: throw TraceError("\"proto\": \(record.proto) is not a hostnat control message")
      }
    } catch let error as TraceError {
      throw error
    } catch {
      throw TraceError("\"message\": not a valid \(record.proto): \(error)")
    }
  }
}

/// `hostnat trace show`: a trace as a readable sequence of exchanges, or as a Mermaid diagram.
public enum TraceShow {
  public enum Format: String, Sendable, CaseIterable {
    case text, mermaid
  }

  public struct Options: Sendable {
    /// Show every heartbeat instead of counting them between other messages.
    public var heartbeats = false
    /// Print each message's protobuf JSON under its line.
    public var full = false
    /// Only exchanges with this host (a controller's trace holds every host's).
    public var peer: String?
    public var format = Format.text
    public init() {}
  }

  /// One line about a message: what a reader needs to follow the exchange.
  public static func summary(_ record: TraceRecord) -> String {
    let message: TracedMessage
    do {
      message = try TracedMessage(record)
    } catch {
      return "\(record.type) (undecodable: \(error.description))"
    }
    switch message {
    case .agent(let m):
      switch m.message {
      case .hello(let h)?: return hello(h)
      case .ack(let a)?: return "ack v\(a.version) [\(a.nonce)]"
      case .nack(let n)?: return nack(n)
      case .heartbeat?: return "heartbeat"
      case .usage(let u)?:
        let inUse = u.nics.reduce(0) { $0 + Int($1.portsInUse) }
        let allocated = u.nics.reduce(0) { $0 + Int($1.portsAllocated) }
        let idle = u.nics.reduce(0) { $0 + $1.idleBlocks.count }
        return "usage (holds v\(u.appliedVersion)): \(u.nics.count) NIC(s), \(inUse) of \(allocated) ports in use, \(idle) idle block(s)"
      case .portRequest(let r)?: return "port request \(r.requestID) for \(r.instance)/\(r.nic) (has \(r.portsAllocated) ports)"
      case nil: return "empty agent message"
      }
    case .controller(let m):
      switch m.message {
      case .push(let p)?:
        let c = p.config
        let blocks = c.vms.flatMap(\.nics).flatMap(\.natBindings).flatMap(\.portBlocks)
        let ips = Set(blocks.map(\.natIp)).sorted()
        let drained = blocks.filter(\.drained).count
        return "push v\(c.version) [\(p.nonce)]: \(c.vms.count) VM(s), \(c.gateways.count) gateway(s), \(blocks.count) port block(s)"
          + (drained > 0 ? " (\(drained) drained)" : "") + (ips.isEmpty ? "" : " on \(ips.joined(separator: ","))")
      case .heartbeat?: return "heartbeat"
      case .portGrant(let g)?:
        if !g.refusedReason.isEmpty { return "port grant \(g.requestID): refused: \(g.refusedReason)" }
        return "port grant \(g.requestID): \(g.block.natIp):\(g.block.firstPort)+\(g.block.count) in v\(g.version)"
      case nil: return "empty controller message"
      }
    case .edge(let m):
      switch m.message {
      case .hello(let h)?: return hello(h)
      case .ack(let a)?: return "ack v\(a.version) [\(a.nonce)]"
      case .nack(let n)?: return nack(n)
      case .heartbeat?: return "heartbeat"
      case nil: return "empty edge message"
      }
    case .edgeController(let m):
      switch m.message {
      case .push(let p)?:
        return "push v\(p.config.version) [\(p.nonce)]: \(p.config.natRoutes.count) NAT route(s), \(p.config.externalRoutes.count) external-IP route(s)"
      case .heartbeat?: return "heartbeat"
      case nil: return "empty controller message"
      }
    }
  }

  static func hello(_ h: Hostnat_V1_Hello) -> String {
    "hello \(h.hostID) boot \(h.bootID.prefix(8)) holds v\(h.appliedVersion)" + (h.underlayAddress.isEmpty ? "" : " underlay \(h.underlayAddress)")
  }

  static func nack(_ n: Hostnat_V1_Nack) -> String {
    "nack v\(n.version) [\(n.nonce)] keeps v\(n.appliedVersion): \(n.error)"
  }

  /// The host's name and the controller's, whichever side wrote the record: a sequence always
  /// reads host on the left, controller on the right.
  public static func parties(_ r: TraceRecord) -> (host: String, controller: String) {
    r.side == "controller" || r.side == "replay" ? (r.peer, "controller") : (r.selfName, "controller")
  }

  public static func render(_ all: [TraceRecord], options: Options = .init()) -> String {
    let records = all.filter { options.peer == nil || parties($0).host == options.peer }
    switch options.format {
    case .text: return text(records, all: all.count, options: options)
    case .mermaid: return mermaid(records, options: options)
    }
  }

  static func text(_ records: [TraceRecord], all: Int, options: Options) -> String {
    guard let first = records.first, let last = records.last else {
      return all == 0 ? "empty trace\n" : "no message in the trace matches\n"
    }
    let streams = Set(records.map { "\($0.selfName)/\($0.stream)" }).count
    let hosts = Set(records.map { parties($0).host }).sorted()
    var out = "control trace written by \(first.side) \(first.selfName): \(records.count) message(s), \(streams) stream(s), "
      + "\(hosts.count) host(s), \(String(format: "%.3f", Double(last.ms - first.ms) / 1000)) s from \(TraceCodec.iso(first.ms))\n"
    let width = min(24, max(4, hosts.map(\.count).max() ?? 4))
    out += "      +s  st  " + "host".padding(toLength: width, withPad: " ", startingAt: 0) + "    message\n"
    var heartbeats = 0
    func flush() {
      if heartbeats > 0 {
        out += String(repeating: " ", count: 14 + width + 4) + "(\(heartbeats) heartbeat(s))\n"
        heartbeats = 0
      }
    }
    for r in records {
      if r.type == "heartbeat" && !options.heartbeats {
        heartbeats += 1
        continue
      }
      flush()
      let seconds = String(format: "%8.3f", Double(r.ms - first.ms) / 1000)
      let stream = String(r.stream).padding(toLength: 2, withPad: " ", startingAt: 0)
      let host = String(parties(r).host.prefix(width)).padding(toLength: width, withPad: " ", startingAt: 0)
      out += "\(seconds)  \(stream)  \(host) \(r.fromController ? "<- " : " ->") \(summary(r))\n"
      if options.full { out += indentJSON(r.json, by: 14 + width + 4) }
    }
    flush()
    return out
  }

  static func mermaid(_ records: [TraceRecord], options: Options) -> String {
    var out = "sequenceDiagram\n"
    var ids: [String: String] = [:]
    var order: [String] = []
    for r in records where ids[parties(r).host] == nil {
      let host = parties(r).host
      ids[host] = "H\(ids.count + 1)"
      order.append(host)
    }
    for host in order { out += "  participant \(ids[host]!) as \(safe(host))\n" }
    out += "  participant C as controller\n"
    var heartbeats = 0
    var lastHost: String?
    func flush() {
      if heartbeats > 0, let lastHost {
        out += "  Note over \(ids[lastHost]!),C: \(heartbeats) heartbeat(s)\n"
      }
      heartbeats = 0
    }
    for r in records {
      let host = parties(r).host
      if r.type == "heartbeat" && !options.heartbeats {
        if lastHost != nil && lastHost != host { flush() }
        lastHost = host
        heartbeats += 1
        continue
      }
      flush()
      lastHost = host
      let (from, to) = r.fromController ? ("C", ids[host]!) : (ids[host]!, "C")
      out += "  \(from)->>\(to): \(safe(summary(r)))\n"
    }
    flush()
    return out
  }

  /// Mermaid ends a message at `;` and reads `#` as an entity; neither matters to a reader.
  static func safe(_ s: String) -> String {
    String(s.map { $0 == ";" || $0 == "#" ? "," : $0 }.prefix(160))
  }

  static func indentJSON(_ json: String, by count: Int) -> String {
    guard let data = json.data(using: .utf8), let object = try? JSONSerialization.jsonObject(with: data),
      let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    else { return String(repeating: " ", count: count) + json + "\n" }
    let pad = String(repeating: " ", count: count)
    return String(decoding: pretty, as: UTF8.self).split(separator: "\n").map { pad + $0 + "\n" }.joined()
  }
}
