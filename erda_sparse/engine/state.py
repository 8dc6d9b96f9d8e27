"""TrainState: everything a checkpoint holds, saved and restored as one object, so that what is saved and
what is restored cannot drift apart: the network (backbone and pseudo head), optimizer, schedule, random
number generators, where the run is (epoch, batch in the epoch, step) and the best validation mIoU so far,
and the run's config."""
import random

import numpy as np
import torch

from ..config import Config


class TrainState:
    def __init__(self, config, net, optimizer, scheduler):
        self.config, self.net, self.optimizer, self.scheduler = config, net, optimizer, scheduler
        self.epoch = 0     # the epoch in progress (or the next one at batch 0)
        self.batch = 0     # batches of that epoch already done
        self.step = 0      # optimizer steps done
        self.best = -1.0   # best validation mIoU so far

    def state_dict(self):
        head = self.net.head
        return {"model": self.net.backbone.state_dict(), "head": head.state_dict() if head is not None else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch, "batch": self.batch, "step": self.step, "best_miou": self.best,
                "config": self.config.to_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}

    def load_state_dict(self, state):
        self.net.backbone.load_state_dict(state["model"])
        if self.net.head is not None:
            self.net.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.batch, self.step, self.best = state["epoch"], state["batch"], state["step"], state["best_miou"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    @staticmethod
    def config_of(state):
        return Config.from_dict(state["config"])
