"""Extracts the FileDescriptorProtos that kubectl's Go (gogo-protobuf) code registers (gzipped)."""
import re, sys, zlib
from google.protobuf import descriptor_pb2
data = open(sys.argv[1], 'rb').read()
fds = descriptor_pb2.FileDescriptorSet()
seen = set()
for m in re.finditer(b'\x1f\x8b\x08\x00\x00\x00\x00\x00', data):
    try:
        out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[m.start():m.start() + 4000000])
    except Exception:
        continue
    if out[:1] != b'\x0a':
        continue
    f = descriptor_pb2.FileDescriptorProto()
    try:
        f.ParseFromString(out)
    except Exception:
        continue
    if f.name.startswith('k8s.io/') and f.name not in seen:
        seen.add(f.name); fds.file.append(f)
open(sys.argv[2], 'wb').write(fds.SerializeToString())
print(len(fds.file))
