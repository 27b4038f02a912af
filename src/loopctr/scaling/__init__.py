"""Scaling studies: a resumable sweep of ordinary runs (`sweep`), FLOPs counted on a real batch (`flops`), and
power-law fits with bootstrap intervals over seeds (`powerlaw`); `loopctr scale` is the command."""
