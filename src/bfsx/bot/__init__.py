"""bfsx.bot"""
