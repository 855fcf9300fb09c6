#!/usr/bin/env python3
"""Part of edgebench's bundle runner (deploy/runner.py): streaming step models, one sample and the state per call.

Shipped beside runner.py in every bundle; like it, imports only the standard library, numpy and the runtime
for the model's format. Keep it compatible with Python 3.7 (older boards).
"""
import numpy as np


# ---------------------------------------------------------------- streaming step models
class OnnxStepper(object):
    """One call of a step model with its state carried: the outputs named in stream['carry'] become the
    next call's inputs. reset() puts back the state the host fed (zeros: a window starts from rest).

    The state stays in onnxruntime's own tensors: two bindings alternate, each reading one set of state
    tensors and writing the other, and only the sample is copied in per call (IOBinding). Through
    session.run each call converted every state input and output (12 and 11 for the LIF L2MU): 2.5x slower
    per streamed window, same outputs. Older onnxruntime builds without OrtValue.update_inplace use run()."""

    def __init__(self, backend, feed, stream):
        self.x_name, self.out_name = stream["x"], stream["output"]
        self.carry = list(stream["carry"])
        self.rest = dict((i, np.ascontiguousarray(feed[i])) for i, _ in self.carry)
        self.feed = dict(feed)
        self.session, self.names = backend.session, backend.output_names
        self.binds, self.last = None, None
        # session.run path: output positions of the carried state and of the scores, found once
        self.carry_at = [(i, self.names.index(o)) for i, o in self.carry]
        self.out_at = self.names.index(self.out_name)
        ortvalue = getattr(backend.ort, "OrtValue", None)
        carried_out = dict((o, i) for i, o in self.carry)
        if ortvalue is None or not hasattr(ortvalue, "update_inplace") or self.out_name not in carried_out:
            return  # session.run, as older builds need
        new = ortvalue.ortvalue_from_numpy
        self.state = [dict((i, new(v.copy())) for i, v in self.rest.items()) for _ in range(2)]
        self.x = new(np.ascontiguousarray(feed[self.x_name]).copy())
        fixed = dict((n, new(np.ascontiguousarray(v))) for n, v in feed.items()
                     if n != self.x_name and n not in self.rest)
        self.binds = []
        for a in (0, 1):
            bind = self.session.io_binding()
            bind.bind_ortvalue_input(self.x_name, self.x)
            for n, v in fixed.items():
                bind.bind_ortvalue_input(n, v)
            for i, o in self.carry:
                bind.bind_ortvalue_input(i, self.state[a][i])
                bind.bind_ortvalue_output(o, self.state[1 - a][i])
            for o in self.names:
                if o not in carried_out:
                    bind.bind_output(o)
            self.binds.append(bind)
        self.out_input = carried_out[self.out_name]
        self.parity = 0

    def reset(self):
        if self.binds is None:
            self.feed.update(self.rest)
            return
        for i, v in self.rest.items():
            self.state[0][i].update_inplace(v)
        self.parity = 0

    def step(self, x_t):
        if self.binds is None:
            feed = self.feed
            feed[self.x_name] = x_t
            outs = self.session.run(self.names, feed)
            for name, k in self.carry_at:
                feed[name] = outs[k]
            self.last = outs[self.out_at]
            return
        self.x.update_inplace(x_t)
        self.session.run_with_iobinding(self.binds[self.parity])
        self.parity = 1 - self.parity

    def output(self):
        """The model's output after the last step (the running class scores)."""
        if self.binds is None:
            return self.last
        return self.state[self.parity][self.out_input].numpy()


class TfliteStepper(object):
    """The TFLite step call: set every input, invoke, read the carried outputs back (through float when a
    quantized file's state input and output scales differ)."""

    def __init__(self, backend, feed, stream):
        backend._set(feed)  # resizes a dynamic-batch file to the feed
        interp = backend.interp
        by_name = dict((d["name"], d) for d in backend.ins)
        outs = dict((d["name"], d) for d in interp.get_output_details())
        self.interp, self.backend = interp, backend
        self.ins = [(by_name[n]["index"], by_name[n]) for n in feed]
        self.values = dict((by_name[n]["index"], backend._quantize(v, by_name[n])) for n, v in feed.items())
        self.rest = dict((by_name[i]["index"], self.values[by_name[i]["index"]]) for i, _ in stream["carry"])
        self.carry = []
        for i, o in stream["carry"]:
            din, dout = by_name[i], outs[o]
            same = np.dtype(din["dtype"]) == np.dtype(dout["dtype"]) and \
                tuple(din.get("quantization", (0.0, 0))) == tuple(dout.get("quantization", (0.0, 0)))
            self.carry.append((din["index"], dout, din, same))
        self.out = outs[stream["output"]]
        self.x = by_name[stream["x"]]

    def reset(self):
        self.values.update(self.rest)

    def step(self, x_t):
        interp, values = self.interp, self.values
        values[self.x["index"]] = self.backend._quantize(x_t, self.x)
        for index, value in values.items():
            interp.set_tensor(index, value)
        interp.invoke()
        for index, dout, din, same in self.carry:
            y = interp.get_tensor(dout["index"])
            if not same:
                y = self.backend._quantize(_dequantize_with(y, dout), din)
            values[index] = y

    def output(self):
        """The model's output after the last step (the running class scores)."""
        return _dequantize_with(self.interp.get_tensor(self.out["index"]), self.out)


def _dequantize_with(y, detail):
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (y.astype(np.float32) - zero) * np.float32(scale)
    return y


def stream_callables(backend, feed, stream, windows):
    """(one step with the state carried, one whole window from rest) over the timed windows
    (batch x channels x steps): step k feeds sample k mod steps and starts from rest at every window."""
    stepper = backend.stepper(feed, stream)
    steps = int(stream["steps"])
    xs = [np.ascontiguousarray(windows[:, :, t]) for t in range(steps)]
    counter = [0]

    def one_step():
        t = counter[0] % steps
        if t == 0:
            stepper.reset()
        stepper.step(xs[t])
        counter[0] += 1

    def one_window():
        stepper.reset()
        for x_t in xs:
            stepper.step(x_t)

    return one_step, one_window


def stream_eval(backend, feed, stream, windows, batch_size, pad):
    """Argmax of the running scores after streaming each eval window from rest, in batches the file takes."""
    steps = int(stream["steps"])
    preds = []
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size]
        n = w.shape[0]
        if n < batch_size and pad:  # a fixed-batch file: the last batch padded, its padding dropped
            w = np.concatenate([w, np.zeros((batch_size - n,) + w.shape[1:], dtype=w.dtype)])
        m = w.shape[0]
        batch_feed = {}
        for k, v in feed.items():
            batch_feed[k] = np.repeat(v[:1], m, axis=0) if v.ndim and v.shape[0] != m else v
        stepper = backend.stepper(batch_feed, stream)
        for t in range(steps):
            stepper.step(np.ascontiguousarray(w[:, :, t]))
        y = np.asarray(stepper.output()).reshape(m, -1)[:n]
        preds.extend(int(v) for v in np.argmax(y, axis=-1))
    return preds
