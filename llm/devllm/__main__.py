"""python -m llm.devllm [--port 8001] [--tokens 40] [--interval-ms 20] [--ttft-ms 100] [--fault none]"""

import argparse

import uvicorn

from llm.devllm.app import make_app
from llm.devllm.behaviour import FAULTS, Behaviour


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m llm.devllm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--tokens", type=int, default=Behaviour.tokens, help="answer length in tokens")
    parser.add_argument("--interval-ms", type=float, default=Behaviour.interval_ms, help="gap between tokens")
    parser.add_argument("--ttft-ms", type=float, default=Behaviour.ttft_ms, help="time to first token")
    parser.add_argument("--fault", choices=FAULTS, default="none", help="misbehave on every request")
    parser.add_argument(
        "--fault-after", type=int, default=Behaviour.fault_after, help="tokens before a mid-stream fault"
    )
    parser.add_argument("--api-key", default=None, help="require this bearer key (default: any non-empty key)")
    args = parser.parse_args(argv)
    behaviour = Behaviour(
        tokens=args.tokens,
        interval_ms=args.interval_ms,
        ttft_ms=args.ttft_ms,
        fault=args.fault,
        fault_after=args.fault_after,
    )
    print(f"dev LLM listening on http://{args.host}:{args.port}/v1 ({behaviour})", flush=True)
    uvicorn.run(
        make_app(behaviour, api_key=args.api_key),
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
