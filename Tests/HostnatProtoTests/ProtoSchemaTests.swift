import Foundation
import HostnatProto
import SwiftProtobuf
import Testing

/// The schema is the contract between controller, agents and edge; these tests pin the parts
/// that other tools (gcloud users, JSON readers, old agents) depend on.
@Suite struct ProtoSchemaTests {
  /// get-status and get-nat-mapping-info must print gcloud's field names.
  @Test func gcloudJSONFieldNames() throws {
    var status = Hostnat_V1_NatStatus()
    status.name = "nat-1"
    status.autoAllocatedNatIps = ["203.0.113.1"]
    status.drainUserAllocatedNatIps = ["203.0.113.9"]
    status.userAllocatedNatIps = ["203.0.113.2"]
    status.minExtraNatIpsNeeded = 2
    status.numVmEndpointsWithNatMappings = 6
    let statusJSON = try status.jsonString()
    for key in ["autoAllocatedNatIps", "drainUserAllocatedNatIps", "userAllocatedNatIps", "minExtraNatIpsNeeded", "numVmEndpointsWithNatMappings"] {
      #expect(statusJSON.contains("\"\(key)\""), "missing \(key) in \(statusJSON)")
    }

    var mapping = Hostnat_V1_InterfaceNatMapping()
    mapping.sourceVirtualIp = "10.0.0.2"
    mapping.sourceAliasIpRange = "10.4.0.0/24"
    mapping.natIpPortRanges = ["203.0.113.1:1024-1087"]
    mapping.drainNatIpPortRanges = ["203.0.113.9:1024-1087"]
    mapping.numTotalNatPorts = 64
    mapping.numTotalDrainNatPorts = 64
    let mappingJSON = try mapping.jsonString()
    for key in ["sourceVirtualIp", "sourceAliasIpRange", "natIpPortRanges", "drainNatIpPortRanges", "numTotalNatPorts", "numTotalDrainNatPorts"] {
      #expect(mappingJSON.contains("\"\(key)\""), "missing \(key) in \(mappingJSON)")
    }
  }

  /// A host config survives the wire and the agent's on-disk copy byte for byte.
  @Test func hostConfigRoundTrip() throws {
    var config = Hostnat_V1_HostConfig()
    config.hostID = "host-a"
    config.version = 42
    config.ownershipLeaseSec = 1500
    var gateway = Hostnat_V1_GatewayConfig()
    gateway.key = "us-east1/router-1/nat-1"
    gateway.endpointIndependentMapping = true
    gateway.timeouts.udpIdleTimeoutSec = 30
    gateway.timeouts.tcpTimeWaitTimeoutSec = 120
    config.gateways = [gateway]
    var nic = Hostnat_V1_NicConfig()
    nic.name = "nic0"
    nic.primaryIp = "10.0.0.2"
    var binding = Hostnat_V1_NicNatBinding()
    binding.gateway = gateway.key
    binding.natSources = [.with { $0.ipCidrRange = "10.0.0.2/32"; $0.primary = true }]
    var block = Hostnat_V1_PortBlock()
    block.natIp = "203.0.113.1"
    block.firstPort = 34_000
    block.count = 64
    binding.portBlocks = [block]
    nic.natBindings = [binding]
    var vm = Hostnat_V1_VmConfig()
    vm.instance = "vm-1"
    vm.nics = [nic]
    config.vms = [vm]

    let bytes: Data = try config.serializedBytes()
    let decoded = try Hostnat_V1_HostConfig(serializedBytes: bytes)
    #expect(decoded == config)
    let again: Data = try decoded.serializedBytes()
    #expect(again == bytes)
  }

  /// An empty message is valid protobuf: the all-defaults config (version 0, nothing), which an
  /// agent must treat as older than anything it holds.
  @Test func emptyBytesAreTheDefaultConfig() throws {
    let decoded = try Hostnat_V1_HostConfig(serializedBytes: [UInt8]())
    #expect(decoded == Hostnat_V1_HostConfig())
    #expect(decoded.version == 0)
  }

  /// Garbage from the wire is an error, never a crash.
  @Test(arguments: [[UInt8(0xFF)], [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], [0x12, 0x05, 0x01]])
  func malformedBytesAreRejected(bytes: [UInt8]) {
    #expect(throws: (any Error).self) {
      _ = try Hostnat_V1_HostConfig(serializedBytes: bytes)
    }
  }

  /// Every message, field, enum value and RPC in proto/ carries a comment, so the schema
  /// is its own documentation.
  @Test func everyDeclarationIsDocumented() throws {
    let protoDir = URL(fileURLWithPath: #filePath)
      .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("proto/hostnat/v1")
    let files = try FileManager.default.contentsOfDirectory(atPath: protoDir.path).filter { $0.hasSuffix(".proto") }
    #expect(files.count >= 3)
    var undocumented: [String] = []
    for file in files {
      let lines = try String(contentsOf: protoDir.appendingPathComponent(file), encoding: .utf8)
        .split(separator: "\n", omittingEmptySubsequences: false)
        .map { $0.trimmingCharacters(in: .whitespaces) }
      var previous = ""
      for (number, line) in lines.enumerated() {
        defer { if !line.isEmpty { previous = line } }
        guard isDeclaration(line), !line.contains("//") else { continue }
        if !previous.hasPrefix("//") {
          undocumented.append("\(file):\(number + 1): \(line)")
        }
      }
    }
    #expect(undocumented.isEmpty, "undocumented declarations:\n\(undocumented.joined(separator: "\n"))")
  }

  private func isDeclaration(_ line: String) -> Bool {
    if line.isEmpty || line.hasPrefix("//") || line == "}" { return false }
    for skip in ["syntax ", "package ", "import ", "reserved ", "oneof ", "option "] where line.hasPrefix(skip) {
      return false
    }
    return line.hasPrefix("message ") || line.hasPrefix("enum ") || line.hasPrefix("service ")
      || line.hasPrefix("rpc ") || line.contains(" = ")
  }
}
