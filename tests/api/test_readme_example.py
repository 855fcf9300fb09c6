"""The README's Python API example runs as written (in a fresh folder) and prints its records."""
import re
import subprocess
import sys

from tests.conftest import REPO


def test_readme_python_api_example_runs(tmp_path):
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- readme-example:python-api -->\n```python\n(.*?)```", text, flags=re.S)
    assert match, "the README lost its Python API example"
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    names = [line.split()[0] for line in lines[:3]]
    assert names == ["mlp-onnx-fp32", "mlp-tflite-fp32", "mlp-tflite-int8"]
    accuracies = [float(line.split("accuracy ")[1].split()[0]) for line in lines[:3]]
    assert min(accuracies) > 0.85
    assert lines[3].endswith("report.html") and (tmp_path / lines[3]).exists()
    assert (tmp_path / "out" / "edgebench.sqlite").exists()
