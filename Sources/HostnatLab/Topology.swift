import HostnatAddressing
import Foundation
import HostnatPackets
import HostnatContracts
import Yams

/// A lab: the intent to create through the admin API, the processes to run, the Internet's
/// servers and the traffic. Decoded from YAML (deploy/lab/default.yaml is the reference).
public struct Topology: Codable, Sendable {
  public struct Network: Codable, Sendable {
    public var name: String
    public var subnets: [Subnet]
    /// Private Google Access: the range NATed subnets reach without NAT.
    public var googleApisRange: String?
  }
  /// A Serverless VPC Access connector (`compute networks vpc-access connectors create`).
  public struct Connector: Codable, Sendable {
    public var name: String
    public var network: String
    /// Its dedicated /28.
    public var range: String
    public var minInstances: UInt32?
    public var maxInstances: UInt32?
    /// Hosts its instances go on (default: every lab host).
    public var hosts: [String]?
  }
  /// A serverless service (`run deploy`).
  public struct Service: Codable, Sendable {
    public var name: String
    public var instances: UInt32?
    public var connector: String?
    /// all-traffic or private-ranges-only (default).
    public var egress: String?
    /// Direct VPC egress.
    public var network: String?
    public var subnet: String?
  }
  public struct Subnet: Codable, Sendable {
    public var name: String
    public var range: String
    public var region: String?
  }
  public struct Address: Codable, Sendable {
    public var name: String
    public var address: String?
    public var region: String?
  }
  public struct Router: Codable, Sendable {
    public var name: String
    public var network: String
    public var region: String?
    public var nats: [NAT]?
  }
  public struct NAT: Codable, Sendable {
    public var name: String
    /// Reserved address names (manual pool); absent = auto-allocated IPs.
    public var natIps: [String]?
    /// Subnets NATed (all their ranges); absent = every subnet of the network.
    public var subnets: [String]?
    public var minPortsPerVm: UInt32?
    public var maxPortsPerVm: UInt32?
    public var endpointIndependentMapping: Bool?
    /// ALL, ERRORS_ONLY or TRANSLATIONS_ONLY; absent = logging off.
    public var logging: String?
    public var udpIdleTimeoutSec: UInt32?
  }
  public struct Instance: Codable, Sendable {
    public var name: String
    public var host: String
    public var subnet: String
    public var ip: String?
    public var externalIp: String?
  }
  public struct Server: Codable, Sendable {
    public var ip: String
    public var services: [String]
  }
  public struct Traffic: Codable, Sendable {
    public var udpEchoPps: Double?
    public var tcpChurnPerSec: Double?
    public var pingPps: Double?
  }

  public var name: String
  public var region: String
  public var networks: [Network]
  public var addresses: [Address]?
  public var routers: [Router]?
  public var hosts: [String]
  public var instances: [Instance]
  public var servers: [Server]
  public var traffic: Traffic?
  public var connectors: [Connector]?
  public var services: [Service]?

  /// Parses and checks a topology; errors name the field.
  public static func parse(yaml: String) throws -> Topology {
    let topology: Topology
    do {
      topology = try YAMLDecoder().decode(Topology.self, from: yaml)
    } catch {
      throw LabError("topology: \(error)")
    }
    try topology.validate()
    return topology
  }

  /// The embedded default.
  public static var `default`: Topology {
    // The embedded text is checked by a test; a failure here is a build defect.
    try! parse(yaml: defaultTopologyYAML)
  }

  func validate() throws {
    let subnets = Set(networks.flatMap { $0.subnets.map(\.name) })
    var hostNames = Set<String>()
    for host in hosts where !hostNames.insert(host).inserted { throw LabError("hosts: \(host) listed twice") }
    for (i, instance) in instances.enumerated() {
      guard hostNames.contains(instance.host) else { throw LabError("instances[\(i)].host: \(instance.host) is not in hosts") }
      guard subnets.contains(instance.subnet) else { throw LabError("instances[\(i)].subnet: \(instance.subnet) is not a subnet of any network") }
      if instance.ip == nil { throw LabError("instances[\(i)].ip: required in a lab (the VM process needs it)") }
      if let ip = instance.ip, IPv4Address(ip) == nil { throw LabError("instances[\(i)].ip: \(ip) is not an IPv4 address") }
    }
    let networkNames = Set(networks.map(\.name))
    let connectorNames = Set((connectors ?? []).map(\.name))
    for (i, c) in (connectors ?? []).enumerated() {
      guard networkNames.contains(c.network) else { throw LabError("connectors[\(i)].network: \(c.network) is not a network") }
      for host in c.hosts ?? [] where !hostNames.contains(host) { throw LabError("connectors[\(i)].hosts: \(host) is not in hosts") }
    }
    for (i, s) in (services ?? []).enumerated() {
      if let c = s.connector, !connectorNames.contains(c) { throw LabError("services[\(i)].connector: \(c) is not a connector") }
      if let sub = s.subnet, !subnets.contains(sub) { throw LabError("services[\(i)].subnet: \(sub) is not a subnet") }
      if let e = s.egress, !["all-traffic", "private-ranges-only"].contains(e) {
        throw LabError("services[\(i)].egress: \(e) is not all-traffic or private-ranges-only")
      }
    }
    for (i, server) in servers.enumerated() {
      guard IPv4Address(server.ip) != nil else { throw LabError("servers[\(i)].ip: \(server.ip) is not an IPv4 address") }
      for service in server.services where ServiceNames.kind(service) == nil {
        throw LabError("servers[\(i)].services: unknown service \(service) (known: \(ServiceNames.all.joined(separator: ", ")))")
      }
    }
  }

  /// Instances by host, in topology order.
  public func instances(on host: String) -> [Instance] { instances.filter { $0.host == host } }
}

/// A lab error: what went wrong and where.
public struct LabError: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}
