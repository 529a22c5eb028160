import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The real `hostnat` binary on loopback: the controller process and every admin command,
/// their output formats, refusals, and the controller's crash and shutdown behaviour.
@Suite(.timeLimit(.minutes(5)))
struct ControllerCLITests {
  /// The seed's example: subnet-1 NATed through a manual pool, subnet-2 without NAT.
  static let seedCommands: [[String]] = [
    ["networks", "create", "vpc", "--description", "the seed network"],
    ["networks", "subnets", "create", "subnet-1", "--network", "vpc", "--region", "us-east1", "--range", "10.240.0.0/24",
     "--secondary-range", "pods=10.4.0.0/20"],
    ["networks", "subnets", "create", "subnet-2", "--network", "vpc", "--region", "us-east1", "--range", "172.16.0.0/24"],
    ["routers", "create", "router-1", "--network", "vpc", "--region", "us-east1"],
    ["addresses", "create", "nat-ip-1", "--region", "us-east1", "--addresses", "203.0.113.10"],
    ["addresses", "create", "nat-ip-2", "--region", "us-east1"],
    ["routers", "nats", "create", "nat-gw", "--router", "router-1", "--region", "us-east1",
     "--nat-external-ip-pool", "nat-ip-1", "--nat-custom-subnet-ip-ranges", "subnet-1:ALL",
     "--udp-idle-timeout", "45s", "--enable-logging", "--log-filter", "ERRORS_ONLY"],
    ["instances", "create", "vm-1", "--host", "host-a", "--subnet", "subnet-1"],
    ["instances", "create", "vm-2", "--host", "host-b", "--subnet", "subnet-1", "--alias-range", "pods:10.4.0.0/24"],
    ["instances", "create", "vm-3", "--host", "host-b", "--subnet", "subnet-2"],
  ]

  static func seed(_ controller: ControllerProcess) async throws {
    for command in seedCommands {
      let result = try await controller.cli(command)
      try #require(result.exitCode == 0, "\(command): \(result.stderr)")
      #expect(result.stderr.hasPrefix("Created ["), "\(command): \(result.stderr)")
    }
  }

  static func start(_ directory: TemporaryDirectory, _ extra: [String] = []) async throws -> ControllerProcess {
    try await ControllerProcess(dataDirectory: directory.path, extraArguments: extra)
  }

  @Test func seedThroughTheCLIWithJSONYAMLAndTables() async throws {
    let directory = try TemporaryDirectory()
    let controller = try await Self.start(directory)
    try await Self.seed(controller)

    let networks = try #require(try await controller.json(["networks", "list"]) as? [[String: Any]])
    #expect(networks.map { $0["name"] as? String } == ["vpc"])
    #expect(networks.first?["description"] as? String == "the seed network")

    let subnets = try #require(try await controller.json(["networks", "subnets", "list", "--network", "vpc"]) as? [[String: Any]])
    #expect(subnets.map { $0["name"] as? String } == ["subnet-1", "subnet-2"])
    let secondary = try #require((subnets.first?["secondaryRanges"] as? [[String: Any]])?.first)
    #expect(secondary["rangeName"] as? String == "pods" && secondary["ipCidrRange"] as? String == "10.4.0.0/20")

    let subnet = try #require(try await controller.json(["networks", "subnets", "describe", "subnet-2", "--region", "us-east1"]) as? [String: Any])
    #expect(subnet["ipCidrRange"] as? String == "172.16.0.0/24" && subnet["network"] as? String == "vpc")

    let addresses = try #require(try await controller.json(["addresses", "list", "--region", "us-east1"]) as? [[String: Any]])
    #expect(addresses.map { $0["address"] as? String } == ["203.0.113.10", "203.0.113.1"])
    #expect(addresses.map { $0["status"] as? String } == ["IN_USE", "RESERVED"])
    #expect(addresses.first?["user"] as? String == "routers/router-1/nats/nat-gw")

    let nat = try #require(try await controller.json(["routers", "nats", "describe", "nat-gw", "--router", "router-1", "--region", "us-east1"]) as? [String: Any])
    #expect(nat["natIpAllocateOption"] as? String == "MANUAL_ONLY")
    #expect(nat["natIps"] as? [String] == ["nat-ip-1"])
    #expect(nat["sourceSubnetworkIpRangesToNat"] as? String == "LIST_OF_SUBNETWORKS")
    #expect((nat["timeouts"] as? [String: Any])?["udpIdleTimeoutSec"] as? Int == 45)
    #expect((nat["logConfig"] as? [String: Any])?["filter"] as? String == "ERRORS_ONLY")
    let selected = try #require((nat["subnetworks"] as? [[String: Any]])?.first)
    #expect(selected["name"] as? String == "subnet-1" && selected["sourceIpRangesToNat"] as? [String] == ["ALL_IP_RANGES"])

    let router = try #require(try await controller.json(["routers", "describe", "router-1", "--region", "us-east1"]) as? [String: Any])
    #expect((router["nats"] as? [[String: Any]])?.map { $0["name"] as? String } == ["nat-gw"])

    let instances = try #require(try await controller.json(["instances", "list"]) as? [[String: Any]])
    #expect(instances.map { $0["name"] as? String } == ["vm-1", "vm-2", "vm-3"])
    #expect(instances.map { $0["host"] as? String } == ["host-a", "host-b", "host-b"])
    let vm1 = try #require(try await controller.json(["instances", "describe", "vm-1"]) as? [String: Any])
    #expect((vm1["networkInterfaces"] as? [[String: Any]])?.first?["networkIp"] as? String == "10.240.0.2")

    // get-status: one manual IP, two NATed VM endpoints (vm-3's subnet has no NAT), no extra IP needed.
    let status = try #require(try await controller.json(["routers", "get-status", "router-1", "--region", "us-east1"]) as? [String: Any])
    let natStatus = try #require(((status["result"] as? [String: Any])?["natStatus"] as? [[String: Any]])?.first)
    #expect(natStatus["name"] as? String == "nat-gw")
    #expect(natStatus["userAllocatedNatIps"] as? [String] == ["203.0.113.10"])
    #expect(natStatus["minExtraNatIpsNeeded"] as? Int == 0)
    #expect(natStatus["numVmEndpointsWithNatMappings"] as? Int == 2)

    // get-nat-mapping-info: vm-1 and vm-2 (primary and alias range share the NIC's ports).
    let info = try #require(try await controller.json(["routers", "get-nat-mapping-info", "router-1", "--region", "us-east1"]) as? [[String: Any]])
    #expect(info.map { $0["instanceName"] as? String } == ["vm-1", "vm-2"])
    let vm1Mappings = try #require(info.first?["interfaceNatMappings"] as? [[String: Any]])
    let vm2Mappings = try #require(info.last?["interfaceNatMappings"] as? [[String: Any]])
    #expect(vm1Mappings.count == 1 && vm1Mappings.first?["sourceVirtualIp"] as? String == "10.240.0.2")
    #expect(vm2Mappings.map { $0["sourceAliasIpRange"] as? String ?? "" }.contains("10.4.0.0/24"))
    for mapping in vm1Mappings + vm2Mappings {
      #expect(mapping["numTotalNatPorts"] as? Int == 64)
      #expect(mapping["numTotalDrainNatPorts"] as? Int == 0)
      #expect(mapping["drainNatIpPortRanges"] as? [String] == [])
      #expect((mapping["natIpPortRanges"] as? [String])?.allSatisfy { $0.hasPrefix("203.0.113.10:") } == true)
    }
    let vm1Range = try #require((vm1Mappings.first?["natIpPortRanges"] as? [String])?.first)
    let vm2Range = try #require((vm2Mappings.first?["natIpPortRanges"] as? [String])?.first)
    #expect(vm1Range != vm2Range, "two VMs never share ports")

    // who-had: a port inside vm-2's block names vm-2 on host-b.
    let vm2First = try #require(Int(vm2Range.split(separator: ":")[1].split(separator: "-")[0]))
    let who = try #require(try await controller.json(["routers", "nats", "who-had", "203.0.113.10:\(vm2First + 3)"]) as? [String: Any])
    #expect(who["found"] as? Bool == true)
    #expect(who["instance"] as? String == "vm-2" && who["host"] as? String == "host-b" && who["interface"] as? String == "nic0")
    #expect(who["natIpPortRange"] as? String == vm2Range)
    let nobody = try #require(try await controller.json(["routers", "nats", "who-had", "203.0.113.10:\(vm2First + 3)", "--at", "2001-01-01T00:00:00Z"]) as? [String: Any])
    #expect(nobody["found"] as? Bool == false, "nobody held it in 2001")

    let hosts = try #require(try await controller.json(["hosts", "list"]) as? [[String: Any]])
    #expect(hosts.map { $0["hostId"] as? String } == ["host-a", "host-b"])
    #expect(hosts.allSatisfy { Int($0["latestVersion"] as? String ?? "0") ?? 0 > 0 })
    #expect(hosts.map { $0["connected"] as? Bool } == [false, false])

    // Tables: a header row, aligned columns, 80 columns wide at most.
    for command in [["networks", "list"], ["networks", "subnets", "list"], ["routers", "list"], ["addresses", "list"],
                    ["instances", "list"], ["hosts", "list"], ["routers", "nats", "list", "--router", "router-1", "--region", "us-east1"],
                    ["routers", "get-status", "router-1", "--region", "us-east1", "--format", "table"]] {
      let result = try await controller.cli(command)
      #expect(result.exitCode == 0, "\(command): \(result.stderr)")
      let lines = result.stdout.split(separator: "\n")
      #expect(lines.count >= 2, "\(command): \(result.stdout)")
      #expect(lines.allSatisfy { $0.count <= 80 }, "\(command) wider than 80 columns:\n\(result.stdout)")
      #expect(lines.first?.uppercased() == lines.first.map(String.init), "\(command): header first")
    }
    let table = try await controller.cli(["instances", "list"])
    #expect(table.stdout.contains("vm-2") && table.stdout.contains("host-b") && table.stdout.contains("10.240.0.3"))
    let mappingTable = try await controller.cli(["routers", "get-nat-mapping-info", "router-1", "--region", "us-east1", "--format", "table"])
    #expect(mappingTable.stdout.contains(vm1Range))

    // YAML: the same data; describe defaults to YAML as gcloud's does.
    let yaml = try await controller.cli(["networks", "describe", "vpc"])
    #expect(yaml.exitCode == 0 && yaml.stdout.contains("name: vpc") && yaml.stdout.contains("description: the seed network"))
    let statusYAML = try await controller.cli(["routers", "get-status", "router-1", "--region", "us-east1", "--format", "yaml"])
    #expect(statusYAML.stdout.contains("minExtraNatIpsNeeded: 0") && statusYAML.stdout.contains("numVmEndpointsWithNatMappings: 2"))
  }

  @Test func updateDrainAndDeleteThroughTheCLI() async throws {
    let directory = try TemporaryDirectory()
    let controller = try await Self.start(directory)
    try await Self.seed(controller)

    // One flag changes one value: the timeout set at create survives an unrelated update.
    let update = try await controller.cli(["routers", "nats", "update", "nat-gw", "--router", "router-1", "--region", "us-east1",
                                           "--tcp-time-wait-timeout", "2m", "--min-ports-per-vm", "128", "--format", "json"])
    #expect(update.exitCode == 0, "\(update.stderr)")
    let updated = try #require(try JSONSerialization.jsonObject(with: Data(update.stdout.utf8)) as? [String: Any])
    let timeouts = updated["timeouts"] as? [String: Any]
    #expect(timeouts?["tcpTimeWaitTimeoutSec"] as? Int == 120 && timeouts?["udpIdleTimeoutSec"] as? Int == 45)
    #expect(updated["minPortsPerVm"] as? Int == 128)

    // Drain nat-ip-1 onto nat-ip-2: old blocks stay as drained ranges, new ones come from nat-ip-2.
    let drain = try await controller.cli(["routers", "nats", "update", "nat-gw", "--router", "router-1", "--region", "us-east1",
                                          "--nat-external-ip-pool", "nat-ip-2", "--nat-external-drain-ip-pool", "nat-ip-1"])
    #expect(drain.exitCode == 0, "\(drain.stderr)")
    let info = try #require(try await controller.json(["routers", "get-nat-mapping-info", "router-1", "--region", "us-east1"]) as? [[String: Any]])
    let mapping = try #require((info.first?["interfaceNatMappings"] as? [[String: Any]])?.first)
    #expect((mapping["drainNatIpPortRanges"] as? [String])?.first?.hasPrefix("203.0.113.10:") == true)
    #expect((mapping["natIpPortRanges"] as? [String])?.first?.hasPrefix("203.0.113.1:") == true)
    #expect(mapping["numTotalDrainNatPorts"] as? Int == 128)
    let status = try #require(try await controller.json(["routers", "get-status", "router-1", "--region", "us-east1"]) as? [String: Any])
    let natStatus = try #require(((status["result"] as? [String: Any])?["natStatus"] as? [[String: Any]])?.first)
    #expect(natStatus["drainUserAllocatedNatIps"] as? [String] == ["203.0.113.10"])

    // Deletes, in dependency order, each reported and effective.
    for command in [["instances", "delete", "vm-3"], ["routers", "nats", "delete", "nat-gw", "--router", "router-1", "--region", "us-east1"],
                    ["addresses", "delete", "nat-ip-1", "--region", "us-east1"], ["routers", "delete", "router-1", "--region", "us-east1"]] {
      let result = try await controller.cli(command)
      #expect(result.exitCode == 0 && result.stderr.hasPrefix("Deleted ["), "\(command): \(result.stderr)")
    }
    let instances = try #require(try await controller.json(["instances", "list"]) as? [[String: Any]])
    #expect(instances.map { $0["name"] as? String } == ["vm-1", "vm-2"])
    let routers = try #require(try await controller.json(["routers", "list"]) as? [[String: Any]])
    #expect(routers.isEmpty)
    let gone = try await controller.cli(["addresses", "describe", "nat-ip-1", "--region", "us-east1"])
    #expect(gone.exitCode != 0 && gone.stderr.contains("NOT_FOUND"))

    // hosts forget: frees what waits for a dead host, with the warning; an unknown host is refused.
    let forget = try await controller.cli(["hosts", "forget", "host-a"])
    #expect(forget.exitCode == 0 && forget.stderr.contains("WARNING") && forget.stderr.contains("Forgot [hosts/host-a]"), "\(forget.stderr)")
    let unknown = try await controller.cli(["hosts", "forget", "host-zz"])
    #expect(unknown.exitCode != 0 && unknown.stderr.contains("NOT_FOUND") && unknown.stderr.contains("host-zz"), "\(unknown.stderr)")
    let listed = try #require(try await controller.json(["hosts", "list"]) as? [[String: Any]])
    #expect(listed.count == 2)
  }

  /// Every kind of command refuses bad input with the field (or flag) and the reason, exits
  /// non-zero, and changes nothing.
  @Test func badInputIsRefusedWithTheFieldAndChangesNothing() async throws {
    let directory = try TemporaryDirectory()
    let controller = try await Self.start(directory)
    try await Self.seed(controller)
    let listings = [
      ["networks", "list"], ["networks", "subnets", "list"], ["routers", "list"], ["addresses", "list"], ["instances", "list"],
      ["routers", "nats", "list", "--router", "router-1", "--region", "us-east1"], ["hosts", "list"],
      ["routers", "get-nat-mapping-info", "router-1", "--region", "us-east1"],
    ]
    func snapshot() async throws -> [String] {
      var outputs: [String] = []
      for command in listings { outputs.append(try await controller.cli(command + ["--format", "json"]).stdout) }
      return outputs
    }
    let before = try await snapshot()

    let nat = ["routers", "nats", "update", "nat-gw", "--router", "router-1", "--region", "us-east1"]
    let newNat = ["routers", "nats", "create", "nat-2", "--router", "router-1", "--region", "us-east1"]
    let newSubnet = ["networks", "subnets", "create", "s3", "--network", "vpc", "--region", "us-east1"]
    let cases: [(command: [String], expected: [String])] = [
      (["networks", "create", "Bad_Name"], ["INVALID_ARGUMENT", "network.name"]),
      (["networks", "create", "vpc"], ["ALREADY_EXISTS", "network.name"]),
      (["networks", "describe", "nope"], ["NOT_FOUND", "network nope"]),
      (["networks", "delete", "vpc"], ["FAILED_PRECONDITION", "name", "subnet-1"]),
      (newSubnet + ["--range", "10.9.0.0/33"], ["--range", "not a CIDR"]),
      (newSubnet + ["--range", "10.9.0.5/24"], ["--range", "host bits"]),
      (newSubnet + ["--range", "10.9.0.0/24", "--secondary-range", "pods"], ["--secondary-range", "NAME=CIDR"]),
      (["networks", "subnets", "create", "s3", "--network", "nope", "--region", "us-east1", "--range", "10.9.0.0/24"], ["NOT_FOUND", "subnet.network"]),
      (newSubnet + ["--range", "10.240.0.128/25"], ["INVALID_ARGUMENT", "ipCidrRange"]),
      (["networks", "subnets", "delete", "subnet-1"], ["FAILED_PRECONDITION", "vm-1"]),
      (["routers", "create", "router-2", "--network", "nope", "--region", "us-east1"], ["NOT_FOUND", "router.network"]),
      (["routers", "create", "router-1", "--network", "vpc", "--region", "us-east1"], ["ALREADY_EXISTS", "router.name"]),
      (["routers", "describe", "nope", "--region", "us-east1"], ["NOT_FOUND", "router"]),
      (["routers", "get-status", "nope", "--region", "us-east1"], ["NOT_FOUND", "router"]),
      (["routers", "get-nat-mapping-info", "nope", "--region", "us-east1"], ["NOT_FOUND", "router"]),
      (["addresses", "create", "a3", "--region", "us-east1", "--addresses", "203.0.113.300"], ["--addresses", "not an IPv4 address"]),
      (["addresses", "create", "a3", "--region", "us-east1", "--addresses", "203.0.113.10"], ["ALREADY_EXISTS", "address.address"]),
      (["addresses", "create", "a3", "--region", "us-east1", "--addresses", "198.51.100.200"], ["FAILED_PRECONDITION", "address.address", "auto-allocation pool"]),
      (["addresses", "delete", "nat-ip-1", "--region", "us-east1"], ["FAILED_PRECONDITION", "routers/router-1/nats/nat-gw"]),
      (newNat + ["--auto-allocate-nat-external-ips", "--nat-external-ip-pool", "nat-ip-2", "--nat-all-subnet-ip-ranges"],
       ["--auto-allocate-nat-external-ips", "--nat-external-ip-pool"]),
      (newNat + ["--auto-allocate-nat-external-ips", "--nat-all-subnet-ip-ranges", "--nat-primary-subnet-ip-ranges"],
       ["--nat-all-subnet-ip-ranges", "mutually exclusive"]),
      (newNat + ["--nat-all-subnet-ip-ranges"], ["--auto-allocate-nat-external-ips", "required"]),
      (newNat + ["--auto-allocate-nat-external-ips", "--nat-custom-subnet-ip-ranges", "subnet-1:"], ["--nat-custom-subnet-ip-ranges"]),
      (["routers", "nats", "create", "nat-gw", "--router", "router-1", "--region", "us-east1", "--auto-allocate-nat-external-ips",
        "--nat-primary-subnet-ip-ranges"], ["ALREADY_EXISTS", "nat.name"]),
      (nat + ["--udp-idle-timeout", "abc"], ["--udp-idle-timeout", "not a duration"]),
      (nat + ["--log-filter", "SOME"], ["--log-filter", "ERRORS_ONLY"]),
      (nat + ["--nat-external-ip-pool", "203.0.113.77"], ["NOT_FOUND", "nat.natIps[0]"]),
      (nat + ["--enable-dynamic-port-allocation", "--enable-endpoint-independent-mapping"], ["INVALID_ARGUMENT", "nat-gw"]),
      (nat + ["--min-ports-per-vm", "100000"], ["INVALID_ARGUMENT", "nat-gw"]),
      (nat, ["nothing to update"]),
      (["routers", "nats", "describe", "nope", "--router", "router-1", "--region", "us-east1"], ["NOT_FOUND", "nope"]),
      (["instances", "create", "vm-9", "--host", "host-a", "--subnet", "nope"], ["NOT_FOUND", "instance.networkInterfaces[0].subnet"]),
      (["instances", "create", "vm-9", "--host", "host-a", "--subnet", "subnet-1", "--private-ip", "10.240.0"], ["--private-ip"]),
      (["instances", "create", "vm-9", "--host", "host-a", "--subnet", "subnet-1", "--alias-range", "10.4.1.0/99"], ["--alias-range"]),
      (["instances", "create", "vm-9", "--host", "host-a", "--subnet", "subnet-1", "--external-ip", "x"], ["--external-ip"]),
      (["instances", "create", "vm-1", "--host", "host-a", "--subnet", "subnet-1"], ["ALREADY_EXISTS", "instance.name"]),
      (["instances", "delete", "nope"], ["NOT_FOUND", "instance nope"]),
      (["routers", "nats", "who-had", "203.0.113.10"], ["NAT_IP:PORT"]),
      (["routers", "nats", "who-had", "203.0.113.10:80"], ["INVALID_ARGUMENT", "port"]),
      (["routers", "nats", "who-had", "203.0.113.10:2000", "--at", "yesterday"], ["--at", "RFC 3339"]),
    ]
    for (command, expected) in cases {
      let result = try await controller.cli(command)
      #expect(result.exitCode != 0, "\(command) was accepted: \(result.stdout)")
      #expect(result.stderr.hasPrefix("ERROR: (hostnat."), "\(command): \(result.stderr)")
      for text in expected {
        #expect(result.stderr.contains(text), "\(command): \"\(text)\" missing in \(result.stderr)")
      }
    }
    // Syntax errors ArgumentParser catches itself (missing or unknown flags) also exit non-zero.
    for command in [["networks", "subnets", "create", "s3", "--network", "vpc"], ["networks", "list", "--format", "xml"]] {
      let result = try await controller.cli(command)
      #expect(result.exitCode != 0 && !result.stderr.isEmpty, "\(command)")
    }
    let badController = try await Hostnat.run(["networks", "list", "--controller", "nowhere"])
    #expect(badController.exitCode == 1 && badController.stderr.contains("--controller"))

    #expect(try await snapshot() == before, "a refused command changed something")
  }

  /// kill -9 and restart on the same data directory: every allocation is where it was and no
  /// config version went down.
  @Test func killNineAndRestartKeepsAllocationsAndVersions() async throws {
    let directory = try TemporaryDirectory()
    let first = try await Self.start(directory)
    try await Self.seed(first)
    let mapping = ["routers", "get-nat-mapping-info", "router-1", "--region", "us-east1", "--format", "json"]
    let mappingBefore = try await first.cli(mapping).stdout
    let hostsBefore = try #require(try await first.json(["hosts", "list"]) as? [[String: Any]])
    let versionsBefore = Dictionary(uniqueKeysWithValues: hostsBefore.map { ($0["hostId"] as? String ?? "", Int($0["latestVersion"] as? String ?? "") ?? 0) })
    let instancesBefore = try await first.cli(["instances", "list", "--format", "json"]).stdout
    await first.kill()
    #expect(!first.process.isRunning)

    let second = try await Self.start(directory)
    #expect(try await second.cli(mapping).stdout == mappingBefore, "allocations moved across a restart")
    #expect(try await second.cli(["instances", "list", "--format", "json"]).stdout == instancesBefore)
    let hostsAfter = try #require(try await second.json(["hosts", "list"]) as? [[String: Any]])
    for host in hostsAfter {
      let id = host["hostId"] as? String ?? ""
      let version = Int(host["latestVersion"] as? String ?? "") ?? 0
      #expect(version >= versionsBefore[id] ?? Int.max, "\(id): version went down")
    }
    // The next change gets a version above everything issued before the crash.
    let create = try await second.cli(["instances", "create", "vm-4", "--host", "host-a", "--subnet", "subnet-1"])
    #expect(create.exitCode == 0, "\(create.stderr)")
    let hostsLater = try #require(try await second.json(["hosts", "list"]) as? [[String: Any]])
    let hostA = Int(hostsLater.first { $0["hostId"] as? String == "host-a" }?["latestVersion"] as? String ?? "") ?? 0
    #expect(hostA > (versionsBefore.values.max() ?? 0))
    await second.kill()
  }

  @Test func sigtermShutsDownGracefullyWithExitZero() async throws {
    let directory = try TemporaryDirectory()
    let controller = try await Self.start(directory)
    let result = try await controller.cli(["networks", "create", "vpc"])
    #expect(result.exitCode == 0)
    let signalled = ContinuousClock.now
    controller.process.signal(SIGTERM)
    let code = await controller.process.waitForExit(timeout: .seconds(10))
    #expect(code == 0, "stderr: \(controller.process.stderr)")
    #expect(ContinuousClock.now - signalled < .seconds(5))
    // And the write it acknowledged is there after a restart.
    let again = try await Self.start(directory)
    let networks = try #require(try await again.json(["networks", "list"]) as? [[String: Any]])
    #expect(networks.map { $0["name"] as? String } == ["vpc"])
    again.process.signal(SIGTERM)
    #expect(await again.process.waitForExit(timeout: .seconds(10)) == 0)
  }

  @Test func unreachableControllerFailsQuicklyAndClearly() async throws {
    let port = try Hostnat.freeLoopbackPort()
    let result = try await Hostnat.run(["networks", "list", "--controller", "127.0.0.1:\(port)"], timeout: .seconds(20))
    #expect(result.exitCode == 1)
    #expect(result.stderr.contains("ERROR: (hostnat.networks.list) UNAVAILABLE: controller 127.0.0.1:\(port) unreachable"), "\(result.stderr)")
    #expect(result.elapsed < .seconds(5), "took \(result.elapsed)")
    // The environment variable names the controller when --controller is absent.
    let viaEnvironment = try await Hostnat.run(["hosts", "list"], timeout: .seconds(20), environment: ["HOSTNAT_CONTROLLER": "127.0.0.1:\(port)"])
    #expect(viaEnvironment.exitCode == 1 && viaEnvironment.stderr.contains("controller 127.0.0.1:\(port) unreachable"))
  }

  @Test func corruptDatabaseIsRefusedWithAClearMessage() async throws {
    let directory = try TemporaryDirectory()
    var garbage = Data("this is not an SQLite database, whatever it was once. ".utf8)
    while garbage.count < 16384 { garbage.append(garbage) }
    try garbage.write(to: directory.url.appendingPathComponent("hostnat.sqlite"))
    let result = try await Hostnat.run(["controller", "--data-dir", directory.path, "--listen", "127.0.0.1:0"], timeout: .seconds(20))
    #expect(!result.timedOut)
    #expect(result.exitCode != 0)
    #expect(result.stderr.contains("corrupt") && result.stderr.contains("hostnat.sqlite"), "\(result.stderr)")
    #expect(!result.stdout.contains("controller listening"))
  }

  @Test(arguments: [
    (["--listen", "localhost:99999"], "--listen"),
    (["--listen", "127.0.0.1:0", "--auto-nat-pool", "us-east1=10.0.0.0/24"], "--auto-nat-pool"),
    (["--listen", "127.0.0.1:0", "--auto-nat-pool", "a=198.51.100.0/25", "--auto-nat-pool", "b=198.51.100.64/26"], "overlaps"),
    (["--listen", "127.0.0.1:0", "--auto-nat-pool", "us-east1=203.0.113.0/26"], "reserved addresses"),
    (["--listen", "127.0.0.1:0", "--auto-nat-pool", "us-east1=192.0.2.224/27"], "serverless egress"),
    (["--listen", "127.0.0.1:0", "--auto-nat-pool", "us-east1"], "REGION=CIDR"),
    (["--listen", "127.0.0.1:0", "--heartbeat-ms", "0"], "--heartbeat-ms"),
  ])
  func badControllerOptionsAreRefused(arguments: [String], expected: String) async throws {
    let directory = try TemporaryDirectory()
    let result = try await Hostnat.run(["controller", "--data-dir", directory.path] + arguments, timeout: .seconds(20))
    #expect(result.exitCode != 0 && !result.timedOut)
    #expect(result.stderr.contains(expected), "\(result.stderr)")
  }

  /// AUTO_ONLY gateways draw from the region's pool: the default split of 198.51.100.0/24, or
  /// the one given with --auto-nat-pool.
  @Test(arguments: [([String](), "198.51.100.1"), (["--auto-nat-pool", "us-central1=192.0.2.0/28"], "192.0.2.1")])
  func autoAllocatedIPsComeFromTheRegionPool(extra: [String], expectedIP: String) async throws {
    let directory = try TemporaryDirectory()
    let controller = try await Self.start(directory, extra)
    for command in [
      ["networks", "create", "net"],
      ["networks", "subnets", "create", "web", "--network", "net", "--region", "us-central1", "--range", "10.1.0.0/24"],
      ["routers", "create", "r", "--network", "net", "--region", "us-central1"],
      ["routers", "nats", "create", "auto", "--router", "r", "--region", "us-central1", "--auto-allocate-nat-external-ips",
       "--nat-primary-subnet-ip-ranges"],
      ["instances", "create", "web-1", "--host", "host-c", "--subnet", "web"],
    ] {
      let result = try await controller.cli(command)
      try #require(result.exitCode == 0, "\(command): \(result.stderr)")
    }
    let status = try #require(try await controller.json(["routers", "get-status", "r", "--region", "us-central1"]) as? [String: Any])
    let natStatus = try #require(((status["result"] as? [String: Any])?["natStatus"] as? [[String: Any]])?.first)
    #expect(natStatus["autoAllocatedNatIps"] as? [String] == [expectedIP])
    #expect(natStatus["numVmEndpointsWithNatMappings"] as? Int == 1)
  }
}
