import Foundation
import HostnatLab
import Testing

@Suite struct TopologyTests {
  /// deploy/lab/default.yaml is what users read and copy; the binary embeds the same text.
  @Test func embeddedDefaultIsTheDeployFile() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let file = try String(contentsOf: root.appendingPathComponent("deploy/lab/default.yaml"), encoding: .utf8)
    #expect(file.trimmingCharacters(in: .whitespacesAndNewlines) == defaultTopologyYAML.trimmingCharacters(in: .whitespacesAndNewlines))
  }

  /// deploy/lab/serverless.yaml (the seed's Cloud Run walkthrough) is embedded the same way.
  @Test func embeddedServerlessIsTheDeployFile() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let file = try String(contentsOf: root.appendingPathComponent("deploy/lab/serverless.yaml"), encoding: .utf8)
    #expect(file.trimmingCharacters(in: .whitespacesAndNewlines) == serverlessTopologyYAML.trimmingCharacters(in: .whitespacesAndNewlines))
    let t = Topology.serverless
    #expect(t.connectors?.map(\.name) == ["cloudrun-connector"])
    #expect(t.services?.filter { $0.connector == "cloudrun-connector" && $0.egress == "all-traffic" }.count == 3, "three services share the connector")
    #expect(t.services?.contains { $0.egress == "private-ranges-only" } == true)
    #expect(t.services?.contains { $0.subnet != nil } == true, "one Direct VPC egress service")
    #expect(t.servers.allSatisfy { $0.ip.hasPrefix("192.0.2.") || $0.ip.hasPrefix("198.51.100.") }, "documentation ranges only")
  }

  @Test(arguments: [
    ("connectors: [{ name: c, network: nonet, range: 10.8.0.0/28 }]", "connectors[0].network"),
    ("services: [{ name: s, connector: noconn }]", "services[0].connector"),
    ("services: [{ name: s, egress: sometimes }]", "services[0].egress"),
  ])
  func badServerlessFieldsAreNamed(extra: String, field: String) {
    let yaml = "name: t\nregion: r\nnetworks: [{ name: n, subnets: [{ name: s1, range: 10.0.0.0/24 }] }]\nhosts: [h1]\ninstances: []\nservers: []\n" + extra
    #expect(throws: LabError.self) { try Topology.parse(yaml: yaml) }
    do { _ = try Topology.parse(yaml: yaml) } catch { #expect("\(error)".contains(field), "\(error)") }
  }

  /// The issue's default: 1 controller, 3 hosts, 6 VMs over 2 subnets, one subnet without NAT,
  /// a manual pool of 2 NAT IPs, logging on.
  @Test func defaultIsTheSeedExample() {
    let t = Topology.default
    #expect(t.hosts.count == 3)
    #expect(t.instances.count == 6)
    #expect(Set(t.instances.map(\.subnet)) == ["subnet-1", "subnet-2"])
    let nat = t.routers?.first?.nats?.first
    #expect(nat?.natIps?.count == 2)
    #expect(nat?.subnets == ["subnet-1"], "subnet-2 has no NAT")
    #expect(nat?.logging == "ALL")
    #expect(t.servers.allSatisfy { $0.ip.hasPrefix("192.0.2.") }, "documentation range only")
  }

  @Test(arguments: [
    ("instances: [{ name: a, host: nohost, subnet: s1, ip: 10.0.0.2 }]", "instances[0].host"),
    ("instances: [{ name: a, host: h1, subnet: nosubnet, ip: 10.0.0.2 }]", "instances[0].subnet"),
    ("instances: [{ name: a, host: h1, subnet: s1, ip: 10.0.0 }]", "instances[0].ip"),
    ("instances: [{ name: a, host: h1, subnet: s1 }]", "instances[0].ip"),
    ("instances: []\nservers: [{ ip: 192.0.2.1, services: [gopher] }]", "unknown service gopher"),
  ])
  func invalidTopologiesNameTheField(tail: String, expected: String) {
    var yaml = """
      name: t
      region: us-east1
      networks: [{ name: n, subnets: [{ name: s1, range: 10.0.0.0/24 }] }]
      hosts: [h1]

      """
    yaml += tail
    if !tail.contains("servers:") { yaml += "\nservers: []" }
    do {
      _ = try Topology.parse(yaml: yaml)
      Issue.record("accepted: \(yaml)")
    } catch {
      #expect("\(error)".contains(expected), "\(error)")
    }
  }
}
