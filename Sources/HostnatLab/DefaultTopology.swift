/// The embedded default lab (`hostnat lab up` without --topology). A test keeps it identical to
/// deploy/lab/default.yaml, the copy users read and edit.
public let defaultTopologyYAML = #"""
# hostnat's default lab: the seed's example grown to 3 hosts.
# One VPC, two subnets; Cloud NAT on subnet-1 only, through a manual pool of two reserved
# NAT IPs, with logging on. VMs in subnet-2 have no NAT and no external IP, so they must get
# no Internet access at all. The "Internet" is the edge, with servers on 192.0.2.0/24.
name: default
region: us-east1
networks:
  - name: vpc
    subnets:
      - { name: subnet-1, range: 10.240.0.0/24 }
      - { name: subnet-2, range: 172.16.0.0/24 }
addresses:
  - { name: nat-ip-1, address: 203.0.113.1 }
  - { name: nat-ip-2, address: 203.0.113.2 }
routers:
  - name: router-1
    network: vpc
    nats:
      - name: nat-1
        natIps: [nat-ip-1, nat-ip-2]
        subnets: [subnet-1]
        # Cloud NAT's default is 64. The lab's VMs open 4 new TCP connections a second, and each
        # closed one holds its NAT port for TCP TIME_WAIT (120 s): about 480 ports in steady state.
        # 64 would exhaust in ~15 s (the port-exhaustion scenario shows exactly that).
        minPortsPerVm: 1024
        logging: ALL
hosts: [host-1, host-2, host-3]
instances:
  - { name: vm-1, host: host-1, subnet: subnet-1, ip: 10.240.0.2 }
  - { name: vm-2, host: host-2, subnet: subnet-1, ip: 10.240.0.3 }
  - { name: vm-3, host: host-3, subnet: subnet-1, ip: 10.240.0.4 }
  - { name: vm-4, host: host-1, subnet: subnet-1, ip: 10.240.0.5 }
  - { name: vm-5, host: host-2, subnet: subnet-2, ip: 172.16.0.2 }
  - { name: vm-6, host: host-3, subnet: subnet-2, ip: 172.16.0.3 }
servers:
  - { ip: 192.0.2.10, services: [udp-echo, tcp-echo, icmp-echo, whoami] }
  - { ip: 192.0.2.20, services: [udp-echo, tcp-echo, icmp-echo, whoami] }
  - { ip: 192.0.2.30, services: [stun, whoami, icmp-echo, filtering-probe] }
traffic:
  # Every VM runs the standard mix against these servers: a UDP echo stream, one long-lived TCP
  # connection, new TCP connections, pings, what-is-my-IP and STUN from one shared source port
  # (endpoint-independent mapping shows as the same NAT IP:port at both), and a filtering probe.
  udpEchoPps: 20
  tcpChurnPerSec: 4
  pingPps: 5
"""#
