"""Encodes test objects as Kubernetes protobuf bodies (k8s\\0 + runtime.Unknown) with the
official protobuf runtime and the message descriptors registered in kubectl v1.33's binary
(extracted by extract.py). Usage: encode.py DESCRIPTORS.fds OUTDIR"""
import sys, calendar, datetime
from google.protobuf import descriptor_pool, descriptor_pb2, message_factory
fds = descriptor_pb2.FileDescriptorSet(); fds.ParseFromString(open(sys.argv[1], 'rb').read())
pool = descriptor_pool.DescriptorPool()
pending = list(fds.file)
for f in pending:  # gogo.proto only carries Go options
    del f.dependency[:]
    f.options.Clear()
    for m in f.message_type:
        m.options.Clear()
        for fl in m.field: fl.options.Clear()
while pending:  # add files after their imports
    before = len(pending)
    for f in list(pending):
        try:
            pool.Add(f); pending.remove(f)
        except Exception:
            pass
    assert len(pending) < before, pending[0].name
def M(name): return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
def envelope(api_version, kind, obj):
    u = M('k8s.io.apimachinery.pkg.runtime.Unknown')()
    u.typeMeta.apiVersion = api_version; u.typeMeta.kind = kind
    u.raw = obj.SerializeToString(); u.contentEncoding = ''; u.contentType = ''
    return b'k8s\x00' + u.SerializeToString()
def ts(s): return calendar.timegm(datetime.datetime.strptime(s, '%Y-%m-%dT%H:%M:%SZ').timetuple())

d = M('k8s.io.api.apps.v1.Deployment')()
d.metadata.name = 'web'; d.metadata.namespace = 'prod'; d.metadata.labels['app'] = 'web'
d.metadata.creationTimestamp.seconds = ts('2026-01-02T03:04:05Z')
d.metadata.annotations['note'] = 'x'
s = d.spec; s.replicas = 3
s.selector.matchLabels['app'] = 'web'
s.strategy.type = 'RollingUpdate'
s.strategy.rollingUpdate.maxSurge.type = 1; s.strategy.rollingUpdate.maxSurge.strVal = '25%'
s.strategy.rollingUpdate.maxUnavailable.type = 0; s.strategy.rollingUpdate.maxUnavailable.intVal = 1
s.revisionHistoryLimit = 10
t = s.template; t.metadata.labels['app'] = 'web'
c = t.spec.containers.add(); c.name = 'app'; c.image = 'nginx:1.27'
c.command.extend(['nginx', '-g', 'daemon off;'])
e = c.env.add(); e.name = 'MODE'; e.value = 'prod'
e = c.env.add(); e.name = 'POD_NAME'; e.valueFrom.fieldRef.fieldPath = 'metadata.name'; e.valueFrom.fieldRef.apiVersion = 'v1'
p = c.ports.add(); p.name = 'http'; p.containerPort = 8080; p.protocol = 'TCP'
c.resources.requests['cpu'].string = '250m'; c.resources.requests['memory'].string = '64Mi'
c.resources.limits['memory'].string = '128Mi'
h = c.readinessProbe.handler.httpGet; h.path = "/healthz"; h.port.type = 1; h.port.strVal = "http"
c.readinessProbe.periodSeconds = 5
t.spec.terminationGracePeriodSeconds = 30
t.spec.restartPolicy = 'Always'
open(sys.argv[2] + '/deployment-full.pb', 'wb').write(envelope('apps/v1', 'Deployment', d))

ev = M('k8s.io.api.policy.v1.Eviction')()
ev.metadata.name = 'web-1'; ev.metadata.namespace = 'default'
ev.deleteOptions.gracePeriodSeconds = 30
ev.deleteOptions.propagationPolicy = 'Foreground'
ev.deleteOptions.dryRun.append('All')
ev.deleteOptions.preconditions.uid = '6f1c4a52-0000-4000-8000-000000000001'
open(sys.argv[2] + '/eviction.pb', 'wb').write(envelope('policy/v1', 'Eviction', ev))
print('ok')
