#!/usr/bin/python3
"""A foreign (Python grpcio) client of eqsim-server, used by server_integration_test.

Usage: foreign_client.py <stub_dir> <port> <image.png>... -- <text>...
Generates nothing itself: <stub_dir> holds similarity_pb2*.py made by grpc_tools.protoc.
Prints one JSON object: Embed values (normalised) of images then texts, the Score MATRIX
response (cosine, logits, probs, logit_scale), and the services listed by server reflection.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from eqsim.v1 import similarity_pb2, similarity_pb2_grpc  # noqa: E402


def main():
    port = sys.argv[2]
    rest = sys.argv[3:]
    sep = rest.index("--")
    images = [open(p, "rb").read() for p in rest[:sep]]
    texts = rest[sep + 1:]
    channel = grpc.insecure_channel("127.0.0.1:" + port)
    stub = similarity_pb2_grpc.SimilarityServiceStub(channel)
    items = [similarity_pb2.Item(image=b) for b in images] + [similarity_pb2.Item(text=t) for t in texts]
    emb = stub.Embed(similarity_pb2.EmbedRequest(items=items), timeout=60)
    score = stub.Score(similarity_pb2.ScoreRequest(images=images, texts=texts, softmax=True), timeout=60)
    # Reflection, raw bytes: ServerReflectionRequest{list_services: ""} is field 7 -> 0x3a 0x00.
    refl = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b, response_deserializer=lambda b: b)
    raw = b"".join(r for r in refl(iter([b"\x3a\x00"]), timeout=30))
    out = {
        "model": [emb.model.name, emb.model.version],
        "dim": emb.dim,
        "embeddings": [list(e.values) for e in emb.embeddings],
        "rows": score.rows, "cols": score.cols,
        "cosine": list(score.cosine), "logits": list(score.logits), "probs": list(score.probs),
        "logit_scale": score.logit_scale,
        "reflection_lists_service": b"eqsim.v1.SimilarityService" in raw,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
