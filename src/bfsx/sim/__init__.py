"""bfsx.sim"""
